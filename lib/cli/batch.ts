/**
 * The batch runner: many pairs, a pool of `concurrency` workers, resumable, interruptible.
 *
 * State lives in the pair folders: each pair's result.json is written last and marks it complete.
 * OUTDIR/results.jsonl (one line per pair, in pair order) is always rewritten whole and atomically
 * from those records, so a resumed run can never duplicate or tear a line.
 */
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { type FileHandle, link, open, readFile, unlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { GocorError } from '../errors';
import { makeFolder, processAlive, removeStaleTemps, writeFileAtomic } from './atomic';
import { completedPair, type MatchSettings, type PairResult, RESULT_FILE, runPair } from './pair';
import type { PairSpec } from './pairs';
import type { Progress } from './progress';

export const RESULTS_FILE = 'results.jsonl';
const LOCK_FILE = '.gocor-batch.lock';

export interface BatchOptions {
  outDir: string;
  settings: MatchSettings;
  concurrency: number;
  /** Redo every pair, complete or not. */
  force: boolean;
}

export interface BatchSummary {
  total: number;
  ok: number;
  failed: number;
  /** Pairs found complete from an earlier run and not redone. */
  skipped: number;
  /** Pairs not attempted because the run was interrupted. */
  notRun: number;
  interrupted: boolean;
  seconds: number;
  /** Pairs processed in this run (not skipped) per second of this run. */
  pairsPerSecond: number;
  results: string;
}

/** Set `requested` (e.g. on SIGINT) to let in-flight pairs finish and start no new one. */
export interface StopSignal {
  requested: boolean;
}

/** One line of results.jsonl: the pair's record and its folder under OUTDIR. */
export type ResultLine = PairResult & { dir: string };

/** results.jsonl's text: one JSON line per pair, in pair order. */
export function resultsText(lines: Map<number, ResultLine>): string {
  return [...lines.keys()]
    .sort((x, y) => x - y)
    .map((k) => `${JSON.stringify(lines.get(k))}\n`)
    .join('');
}

/** The lock files this process holds: a second batch here on the same OUTDIR must not take one over. */
const held = new Set<string>();

interface LockState {
  pid: number;
  /** Which lock file this is (device, inode, change time, content): a new lock never has the same. */
  identity: string;
  ageMs: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** The lock file's holder and identity, or undefined when there is none. */
async function readLock(file: string): Promise<LockState | undefined> {
  let fh: FileHandle;
  try {
    // Non-blocking: a FIFO put there must not hang the batch before it has even started.
    fh = await open(file, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new GocorError('ERR_GOCOR_IO', `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  try {
    const st = await fh.stat({ bigint: true });
    if (!st.isFile()) throw new GocorError('ERR_GOCOR_IO', `${file} is not a lock file; remove it`);
    const { bytesRead, buffer } = await fh.read(Buffer.alloc(32), 0, 32, 0);
    const text = buffer.toString('latin1', 0, bytesRead).trim();
    const pid = /^\d{1,10}$/.test(text) ? Number(text) : 0;
    return {
      pid,
      identity: `${st.dev}-${st.ino}-${st.ctimeNs}-${text.replace(/[^0-9]/g, '')}`,
      ageMs: Date.now() - Number(st.mtimeMs),
    };
  } finally {
    await fh.close();
  }
}

function lockError(file: string, err: unknown): GocorError {
  return new GocorError('ERR_GOCOR_IO', `cannot create ${file}: ${(err as Error).message}`, { cause: err });
}

/** Creates the lock file holding this pid, complete or not at all; false when a lock exists. */
async function createLock(file: string): Promise<boolean> {
  const tmp = `${file}.${process.pid}-${randomBytes(4).toString('hex')}.new`;
  await writeFile(tmp, String(process.pid), { flag: 'wx' }).catch((err) => {
    throw lockError(file, err);
  });
  try {
    // link() fails with EEXIST when the lock exists and otherwise makes it appear with its content.
    await link(tmp, file);
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'ENOSYS' && code !== 'EMLINK') throw lockError(file, err);
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
  // A file system without hard links: O_EXCL create, then the pid (readers wait for it, see lockOutDir).
  try {
    await writeFile(file, String(process.pid), { flag: 'wx' });
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw lockError(file, err);
  }
}

/**
 * Holds OUTDIR for this process until the returned release is called. A lock whose process is gone
 * (killed run) is taken over. Several batches may find the same stale lock at once, and "remove it,
 * then create ours" is two steps, so a slow one could remove the lock another has just created.
 * Hence only one process may remove a given stale lock: the one whose O_EXCL create of a takeover
 * token named after that lock's identity succeeds. O_EXCL create is atomic (exactly one creator
 * wins per name), and the winner removes the lock only if it is still that identity; the losers
 * retry and find the winner's live lock. A token left by a process killed in mid-takeover blocks
 * that takeover; the error then names both files to remove.
 */
export async function lockOutDir(outDir: string): Promise<() => Promise<void>> {
  const file = path.join(outDir, LOCK_FILE);
  const busy = (pid: number) =>
    new GocorError(
      'ERR_GOCOR_IO',
      `another gocor batch (pid ${pid}) is writing ${outDir}; wait for it or remove ${file}`,
    );
  if (held.has(file)) throw busy(process.pid);
  let token = '';
  for (let attempt = 0; attempt < 200; attempt++) {
    if (await createLock(file)) {
      held.add(file);
      return async () => {
        held.delete(file);
        const now = await readLock(file).catch(() => undefined);
        if (now?.pid === process.pid) await unlink(file).catch(() => undefined);
      };
    }
    const holder = await readLock(file);
    if (!holder) continue;
    if (holder.pid === 0 && holder.ageMs < 2000) {
      await sleep(10); // being written without link(), or junk: junk is stale after 2 s
      continue;
    }
    if (holder.pid !== 0 && (held.has(file) || (holder.pid !== process.pid && processAlive(holder.pid))))
      throw busy(holder.pid);
    token = `${file}.${holder.identity}.takeover`;
    try {
      await writeFile(token, String(process.pid), { flag: 'wx' });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new GocorError('ERR_GOCOR_IO', `cannot create ${token}: ${(err as Error).message}`, { cause: err });
      }
      await sleep(5 + 20 * Math.random());
      continue;
    }
    try {
      if ((await readLock(file))?.identity === holder.identity) await unlink(file);
    } finally {
      await unlink(token).catch(() => undefined);
    }
  }
  throw new GocorError(
    'ERR_GOCOR_IO',
    `cannot lock ${outDir}: ${file} keeps changing${token ? ` (remove ${file} and ${token} if no gocor batch runs)` : ''}`,
  );
}

async function previousRecord(pair: PairSpec, outDir: string): Promise<PairResult | undefined> {
  try {
    const rec = JSON.parse(await readFile(path.join(outDir, pair.dir, RESULT_FILE), 'utf8')) as PairResult;
    return rec.a?.path === pair.a && rec.b?.path === pair.b ? rec : undefined;
  } catch {
    return undefined;
  }
}

export async function runBatch(
  pairs: PairSpec[],
  opts: BatchOptions,
  progress: Progress,
  stop: StopSignal,
): Promise<BatchSummary> {
  const started = Date.now();
  await makeFolder(opts.outDir);
  const unlock = await lockOutDir(opts.outDir);
  let trailing: NodeJS.Timeout | undefined;
  try {
    await removeStaleTemps(opts.outDir);
    const lines = new Map<number, ResultLine>();
    const todo: PairSpec[] = [];
    let skipped = 0;
    for (const pair of pairs) {
      const dir = path.join(opts.outDir, pair.dir);
      const done = opts.force || pair.problem ? undefined : await completedPair(pair, dir, opts.settings);
      if (done) {
        lines.set(pair.index, { ...done, index: pair.index, dir: pair.dir });
        skipped++;
        continue;
      }
      // A failed or partial pair keeps its earlier record in results.jsonl until it is redone.
      const earlier = await previousRecord(pair, opts.outDir);
      if (earlier) lines.set(pair.index, { ...earlier, index: pair.index, dir: pair.dir });
      todo.push(pair);
    }

    const resultsPath = path.join(opts.outDir, RESULTS_FILE);
    let writing: Promise<void> = Promise.resolve();
    let lastWrite = 0;
    // The first failed rewrite (disk full, results.jsonl replaced by a folder): no new pair starts
    // after it, since results.jsonl could not record it; the batch ends with this error.
    let writeFailure: GocorError | undefined;
    // At most one rewrite a second (the file grows with the batch), but never more than a second stale.
    const writeResults = (force: boolean): Promise<void> => {
      const wait = 1000 - (Date.now() - lastWrite);
      if (!force && wait > 0) {
        trailing ??= setTimeout(() => {
          trailing = undefined;
          void writeResults(true);
        }, wait);
        return writing;
      }
      clearTimeout(trailing);
      trailing = undefined;
      lastWrite = Date.now();
      const text = resultsText(lines);
      // Chained so that an older snapshot can never be renamed over a newer one; never rejects.
      writing = writing
        .then(() => writeFileAtomic(resultsPath, text))
        .catch((err: GocorError) => {
          writeFailure ??= err;
        });
      return writing;
    };
    await writeResults(true);

    let matched = 0;
    let failed = 0;
    const counts = () => ({ done: skipped + matched + failed, failed, skipped });
    progress.update(counts());

    let next = 0;
    // runPair records every problem of a pair; what it throws (the addon failing to load) ends the
    // batch, but only once every worker has stopped, so no pair runs after the error line.
    let fatal: unknown;
    const worker = async () => {
      while (!stop.requested && !writeFailure && fatal === undefined && next < todo.length) {
        const pair = todo[next++] as PairSpec;
        let rec: PairResult;
        try {
          rec = await runPair(
            { a: pair.a, b: pair.b, gt: pair.gt, index: pair.index },
            path.join(opts.outDir, pair.dir),
            opts.settings,
            pair.problem,
          );
        } catch (err) {
          fatal ??= err;
          return;
        }
        lines.set(pair.index, { ...rec, dir: pair.dir });
        if (rec.status === 'ok') matched++;
        else {
          failed++;
          progress.log(`pair ${pair.index} (${pair.dir}) failed: ${rec.error?.code}: ${rec.error?.message}`);
        }
        progress.update(counts());
        void writeResults(false);
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, Math.min(opts.concurrency, todo.length)) }, worker));
    if (fatal !== undefined) throw fatal;
    // Once more after a failure too: if there is room again, results.jsonl catches up with the pairs.
    await writeResults(true);
    if (writeFailure) {
      throw new GocorError(
        'ERR_GOCOR_IO',
        `${writeFailure.message}; stopped after the pairs in flight (their folders are complete): rerun the same command to resume`,
        { cause: writeFailure },
      );
    }

    const seconds = (Date.now() - started) / 1000;
    const processed = matched + failed;
    const notRun = pairs.length - skipped - processed;
    return {
      total: pairs.length,
      ok: skipped + matched,
      failed,
      skipped,
      notRun,
      interrupted: stop.requested && notRun > 0,
      seconds: Math.round(seconds * 1000) / 1000,
      pairsPerSecond: seconds > 0 ? Math.round((processed / seconds) * 1000) / 1000 : 0,
      results: resultsPath,
    };
  } finally {
    clearTimeout(trailing);
    progress.stop();
    await unlock();
  }
}
