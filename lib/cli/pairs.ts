/**
 * The pairs of a batch: from a CSV list (`a,b[,gt]`) or from a folder (pairing rule below).
 * Pair numbers are 1-based in list order; pair i writes to `OUTDIR/<i>-<name of a>/`.
 */
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { GocorError } from '../errors';

export interface PairSpec {
  /** 1-based pair number. */
  index: number;
  /** Absolute paths. */
  a: string;
  b: string;
  gt?: string;
  /** Folder name under OUTDIR: `<index>-<name of a>`. */
  dir: string;
  /** Set when the list line itself is unusable; the pair is then recorded as failed. */
  problem?: GocorError;
}

/** `<index>-<a's file name without extension>`, reduced to characters safe in any file system. */
export function pairDirName(index: number, a: string): string {
  const stem = path
    .basename(a, path.extname(a))
    .replace(/[^A-Za-z0-9._-]+/g, '_')
    .replace(/^\.+/, '')
    .slice(0, 64);
  return `${index}-${stem || 'pair'}`;
}

/** Splits one CSV line; fields may be double-quoted (with "" for a quote), so paths may hold commas. */
export function splitCsvLine(line: string): string[] {
  const fields: string[] = [];
  let i = 0;
  for (;;) {
    let field = '';
    while (line[i] === ' ' || line[i] === '\t') i++;
    if (line[i] === '"') {
      i++;
      for (;;) {
        if (i >= line.length) throw new Error('unterminated quoted field');
        if (line[i] === '"') {
          if (line[i + 1] === '"') {
            field += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        field += line[i++];
      }
      while (line[i] === ' ' || line[i] === '\t') i++;
      if (i < line.length && line[i] !== ',') throw new Error('unexpected text after a quoted field');
    } else {
      const end = line.indexOf(',', i);
      field = (end < 0 ? line.slice(i) : line.slice(i, end)).trim();
      i = end < 0 ? line.length : end;
    }
    fields.push(field);
    if (i >= line.length) return fields;
    i++; // the comma
  }
}

const HEADER = /^\s*"?a"?\s*,\s*"?b"?\s*(,\s*"?gt"?\s*)?$/i;

/**
 * Reads a pair list: one pair per line `a,b[,gt]`; an optional first line `a,b[,gt]` is a header;
 * blank lines and lines starting with '#' are skipped and do not count. Relative paths are relative
 * to the list's folder. A malformed line becomes a pair with a `problem` (recorded as failed).
 */
export async function readPairList(listPath: string): Promise<PairSpec[]> {
  let text: string;
  try {
    text = await readFile(listPath, 'utf8');
  } catch (err) {
    throw new GocorError('ERR_GOCOR_IO', `cannot read pair list ${listPath}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  const base = path.dirname(path.resolve(listPath));
  const lines = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  const pairs: PairSpec[] = [];
  let first = true;
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n] as string;
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue;
    if (first && HEADER.test(line)) {
      first = false;
      continue;
    }
    first = false;
    const index = pairs.length + 1;
    let fields: string[];
    let problem: string | undefined;
    try {
      fields = splitCsvLine(line);
    } catch (err) {
      fields = [];
      problem = (err as Error).message;
    }
    if (!problem && (fields.length < 2 || fields.length > 3 || fields.some((f, k) => f === '' && k < 2))) {
      problem = `expected 2 or 3 fields (a,b[,gt]) but found ${fields.length}`;
    }
    const abs = (p: string | undefined) => (p ? path.resolve(base, p) : '');
    const a = abs(fields[0]) || path.join(base, `line${n + 1}`);
    const pair: PairSpec = { index, a, b: abs(fields[1]), dir: pairDirName(index, a) };
    if (fields[2]) pair.gt = abs(fields[2]);
    if (problem) pair.problem = new GocorError('ERR_GOCOR_INVALID_ARG', `${listPath} line ${n + 1}: ${problem}`);
    pairs.push(pair);
  }
  if (pairs.length === 0) throw new GocorError('ERR_GOCOR_INVALID_ARG', `pair list ${listPath} holds no pairs`);
  return pairs;
}

const IMAGE_EXT = /\.(png|jpe?g|webp|tiff?|gif|avif)$/i;
const GT_EXT = /\.(flo|npy|png)$/i;
/** Tags that end a file name (before the extension): first image, second image, ground truth. */
const TAGGED = /^(.*?)(?:[_-]?(1|l|left)|[_-](a))$/i;
const TAGGED_B = /^(.*?)(?:[_-]?(2|r|right)|[_-](b))$/i;
const TAGGED_GT = /^(.*?)[_-]?gt$/i;

/**
 * Pairs the images of a folder (not recursive). Rule: names (without extension) that end in a
 * first-image tag — `1`, `L`, `left` or `_a` — pair with the name that has the same stem and the
 * matching second tag — `2`, `R`, `right` or `_b` (case-insensitive; `_` or `-` may separate the
 * tag). `<stem>gt`, `<stem>_gt` or `<stem>-gt` with extension .flo, .npy or .png is the pair's ground
 * truth. Examples: frame_1.png + frame_2.png; aloeL.jpg + aloeR.jpg + aloeGT.png; x_a.jpg + x_b.jpg.
 * Pairs come in name order of their stem. Returns the pairs and the names left unpaired.
 */
export async function pairFolder(dir: string): Promise<{ pairs: PairSpec[]; unpaired: string[] }> {
  let names: string[];
  try {
    names = (await readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name);
  } catch (err) {
    throw new GocorError('ERR_GOCOR_IO', `cannot read folder ${dir}: ${(err as Error).message}`, { cause: err });
  }
  names.sort((x, y) => x.localeCompare(y, 'en', { numeric: true }));
  type Slot = { a?: string; b?: string; gt?: string };
  const groups = new Map<string, Slot>();
  const slot = (key: string): Slot => {
    const k = key.toLowerCase();
    const s = groups.get(k) ?? {};
    groups.set(k, s);
    return s;
  };
  const used = new Set<string>();
  for (const name of names) {
    const stem = path.basename(name, path.extname(name));
    const gt = TAGGED_GT.exec(stem);
    if (gt && GT_EXT.test(name)) {
      slot(gt[1] as string).gt ??= name;
      continue;
    }
    if (!IMAGE_EXT.test(name)) continue;
    const ma = TAGGED.exec(stem);
    const mb = TAGGED_B.exec(stem);
    if (ma) slot(ma[1] as string).a ??= name;
    else if (mb) slot(mb[1] as string).b ??= name;
  }
  const pairs: PairSpec[] = [];
  const keys = [...groups.keys()].sort((x, y) => x.localeCompare(y, 'en', { numeric: true }));
  for (const key of keys) {
    const s = groups.get(key) as Slot;
    if (!s.a || !s.b) continue;
    const index = pairs.length + 1;
    const a = path.resolve(dir, s.a);
    const pair: PairSpec = { index, a, b: path.resolve(dir, s.b), dir: pairDirName(index, a) };
    used.add(s.a).add(s.b);
    if (s.gt) {
      pair.gt = path.resolve(dir, s.gt);
      used.add(s.gt);
    }
    pairs.push(pair);
  }
  const unpaired = names.filter((n) => !used.has(n) && (IMAGE_EXT.test(n) || GT_EXT.test(n)));
  if (pairs.length === 0) {
    throw new GocorError(
      'ERR_GOCOR_INVALID_ARG',
      `no image pairs found in ${dir}: name them <stem>1/<stem>2, <stem>L/<stem>R or <stem>_a/<stem>_b (see gocor batch --help)`,
    );
  }
  return { pairs, unpaired };
}
