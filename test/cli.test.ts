/**
 * The gocor CLI, run as a child process (`node dist/cli.js`; build first with `npm run build:ts`).
 * Smoke: help and info. Bad input: one error line and the exit code. Batch: a corrupt and a missing
 * pair among good ones, resume after SIGKILL, stop on SIGINT. Report: opens in headless Chromium
 * without errors and sorts by error. Numerics: metrics and correlate volumes against float64 here.
 */
import type { ChildProcess } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  cliBuilt,
  imageInfo,
  ROOT,
  readFloFile,
  readJsonl,
  readNpyFile,
  runCli,
  start,
  tempDir,
  texture,
  writeFloFile,
  writeNpyFile,
  writePairList,
  writeShiftedPair,
} from './cli/fixtures';

const S = 128;
const TEX_W = 200;
const CHROMIUM = '/usr/bin/chromium';
const tmp = tempDir('gocor-cli-');
const data = path.join(tmp, 'data');
const tex = texture(TEX_W, TEX_W, 7);

beforeAll(async () => {
  if (!cliBuilt()) throw new Error(`${CLI} is missing: run \`npm run build:ts\` before the tests`);
  mkdirSync(data, { recursive: true });
  const shifts = [
    { dx: 3, dy: 2 },
    { dx: 5, dy: -4 },
    { dx: 0, dy: 0 },
  ];
  for (const [k, d] of shifts.entries()) {
    await writeShiftedPair(tex, TEX_W, S, d, path.join(data, `p${k + 1}a.png`), path.join(data, `p${k + 1}b.png`));
  }
  // Pair 1's ground truth is right; pair 2's is off by 8 px in u, so its AEPE is large and it sorts first.
  writeFloFile(
    path.join(data, 'p1.flo'),
    S,
    S,
    () => -3,
    () => -2,
  );
  writeFloFile(
    path.join(data, 'p2.flo'),
    S,
    S,
    () => -5 + 8,
    () => 4,
  );
});

/** Every file under `dir`, recursively. */
function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)],
  );
}

const isTemp = (f: string) => /^\..+\.tmp$/.test(path.basename(f));

/** Checks the files of a complete pair folder: sizes, decodability, finite flow. */
async function expectCompletePair(dir: string): Promise<Record<string, unknown>> {
  const rec = JSON.parse(readFileSync(path.join(dir, 'result.json'), 'utf8'));
  expect(rec.status).toBe('ok');
  expect(rec.flow).toEqual({ width: S, height: S });
  expect(rec.a).toMatchObject({ width: S, height: S });
  expect(['cpu', 'cuda']).toContain(rec.device);
  expect(rec.timings.totalMs).toBeGreaterThan(0);
  const flo = readFloFile(path.join(dir, 'flow.flo'));
  expect([flo.W, flo.H]).toEqual([S, S]);
  expect(flo.u.every(Number.isFinite) && flo.v.every(Number.isFinite)).toBe(true);
  expect(await imageInfo(path.join(dir, 'flow.png'))).toMatchObject({ width: S, height: S, channels: 3 });
  expect(await imageInfo(path.join(dir, 'warped.png'))).toMatchObject({ width: S, height: S });
  expect(await imageInfo(path.join(dir, 'confidence.png'))).toEqual({ width: S, height: S, channels: 1 });
  return rec;
}

/** AEPE and PCK of the flow in `floFile` against a constant true flow, in float64. */
function metrics64(floFile: string, gu: number, gv: number) {
  const { u, v } = readFloFile(floFile);
  let sum = 0;
  let n1 = 0;
  let n3 = 0;
  let n5 = 0;
  for (let p = 0; p < u.length; p++) {
    const e = Math.hypot((u[p] as number) - gu, (v[p] as number) - gv);
    sum += e;
    n1 += e <= 1 ? 1 : 0;
    n3 += e <= 3 ? 1 : 0;
    n5 += e <= 5 ? 1 : 0;
  }
  return { aepe: sum / u.length, pck1: n1 / u.length, pck3: n3 / u.length, pck5: n5 / u.length };
}

describe('cli: smoke', () => {
  it('has --help with examples for every command', async () => {
    for (const cmd of [[], ['match'], ['batch'], ['report'], ['correlate'], ['info'], ['bench']]) {
      const r = await runCli([...cmd, '--help']);
      expect(r.code, cmd.join(' ')).toBe(0);
      expect(r.stdout).toContain('Examples:');
      expect(r.stdout).toContain(`Usage: gocor${cmd.length ? ` ${cmd[0]}` : ''}`);
    }
  });

  it('info --json gives the version and backends', async () => {
    const r = await runCli(['info', '--json']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.version).toBe(JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')).version);
    expect(info.backends.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(typeof info.build.cuda).toBe('boolean');
  });
});

describe('cli: bad input', () => {
  it('a failure is one line with the error code, exit 1', async () => {
    const r = await runCli([
      'match',
      path.join(data, 'nope.png'),
      path.join(data, 'nope2.png'),
      '-o',
      path.join(tmp, 'bad'),
    ]);
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^gocor: ERR_GOCOR_IO: .*nope2?\.png/);
  });

  it('usage errors exit 2', async () => {
    expect((await runCli(['batch', '-o', path.join(tmp, 'x')])).code).toBe(2);
    expect((await runCli(['match', 'a.png', 'b.png'])).code).toBe(2);
    expect((await runCli(['match', 'a.png', 'b.png', '-o', 'x', '--threads', '0'])).code).toBe(2);
    expect((await runCli(['match', 'a.png', 'b.png', '-o', 'x', '--gocor-params', 'trained'])).code).toBe(2);
    expect((await runCli(['match', 'a.png', 'b.png', '-o', 'x', '--quality', 'slow'])).code).toBe(2);
    expect((await runCli(['match', 'a.png', 'b.png', '-o', 'x', '--similarity-search', 'never'])).code).toBe(2);
    expect((await runCli(['frobnicate'])).code).toBe(2);
    // One documented line, no commander hint line.
    const r = await runCli(['match', 'a.png', 'b.png', '-o', 'x', '--quality', 'slow']);
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      "gocor: ERR_GOCOR_INVALID_ARG: option '--quality <preset>' argument 'slow' is invalid. Allowed choices are fast, balanced, best. (see gocor --help)",
    ]);
  });
});

/** `gocor match` on the first fixture pair into `out`, with `extra` arguments. */
const matchP1 = (out: string, ...extra: string[]) =>
  runCli(['match', path.join(data, 'p1a.png'), path.join(data, 'p1b.png'), '-o', out, ...extra]);

describe('cli: match', () => {
  it('writes the six files of one pair, with metrics against --gt', async () => {
    const out = path.join(tmp, 'out-match');
    const r = await matchP1(out, '--gt', path.join(data, 'p1.flo'), '--json');
    expect(r.code, r.stderr).toBe(0);
    const rec = JSON.parse(r.stdout);
    expect(rec).toEqual(JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8')));
    await expectCompletePair(out);
    expect(rec.options).toMatchObject({
      method: 'gocor',
      device: 'auto',
      confidence: 'peak',
      gocorParams: 'fitted',
      similaritySearch: 'auto',
    });
    expect(rec.metrics.aepe).toBeCloseTo(metrics64(path.join(out, 'flow.flo'), -3, -2).aepe, 3);
    expect(await imageInfo(path.join(out, 'occlusion.png'))).toEqual({ width: S, height: S, channels: 1 });
    expect(Object.keys(rec.timings.stages)).toEqual(['features', 'coarse', 'fill', 'refine', 'finalFill', 'output']);
  });
  it('--quality fast: one direction, no occlusion mask', async () => {
    const out = path.join(tmp, 'out-match-fast');
    const r = await matchP1(out, '--quality', 'fast', '--similarity-search', 'off');
    expect(r.code, r.stderr).toBe(0);
    const rec = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8'));
    expect(rec.options.quality).toBe('fast');
    expect(rec.options.similaritySearch).toBe(false);
    expect(rec.files.occlusion).toBeUndefined();
    expect(rec.metrics).toBeUndefined();
  });
});

describe('cli: batch --dir', () => {
  it('pairs <stem>_1/<stem>_2 and <stem>L/<stem>R with <stem>GT, ignores files without a partner', async () => {
    const dir = path.join(tmp, 'folder');
    mkdirSync(dir);
    const copy = (from: string, to: string) => writeFileSync(path.join(dir, to), readFileSync(path.join(data, from)));
    copy('p1a.png', 'walk_1.png');
    copy('p1b.png', 'walk_2.png');
    copy('p2a.png', 'stereoL.png');
    copy('p2b.png', 'stereoR.png');
    copy('p2.flo', 'stereoGT.flo');
    copy('p3a.png', 'lonely.png');
    const out = path.join(tmp, 'out-dir');
    const r = await runCli(['batch', '--dir', dir, '-o', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/1 file\(s\) without a partner ignored: lonely\.png/);
    const lines = readJsonl(path.join(out, 'results.jsonl'));
    expect(
      lines.map((l) => [l.dir, (l.b as { path: string }).path, (l.gt as { path: string } | undefined)?.path]),
    ).toEqual([
      ['1-stereoL', path.join(dir, 'stereoR.png'), path.join(dir, 'stereoGT.flo')],
      ['2-walk_1', path.join(dir, 'walk_2.png'), undefined],
    ]);
  });
});

describe('cli: batch with a corrupt and a missing pair', () => {
  const out = path.join(tmp, 'out-corrupt');
  let run: Awaited<ReturnType<typeof runCli>>;
  beforeAll(async () => {
    const corrupt = Buffer.concat([
      Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
      Buffer.alloc(200, 7),
    ]);
    writeFileSync(path.join(data, 'corrupt.png'), corrupt);
    const list = [
      'a,b,gt',
      'data/p1a.png,data/p1b.png,data/p1.flo',
      `data/p2a.png,${path.join(data, 'p2b.png')},data/p2.flo`,
      '# a comment line does not count',
      'data/p3a.png,data/p3b.png',
      'data/p1a.png,data/corrupt.png',
      'data/missing.png,data/p3b.png',
      '',
    ].join('\n');
    writeFileSync(path.join(tmp, 'pairs.csv'), list);
    run = await runCli(['batch', path.join(tmp, 'pairs.csv'), '-o', out, '--json', '--progress-interval', '0.2']);
  }, 60_000);

  it('exits 1, records the bad pairs and completes the good ones', async () => {
    expect(run.code).toBe(1);
    const summary = JSON.parse(run.stdout);
    expect(summary).toMatchObject({ total: 5, ok: 3, failed: 2, skipped: 0, interrupted: false });
    for (const dir of ['1-p1a', '2-p2a', '3-p3a']) await expectCompletePair(path.join(out, dir));
    const lines = readJsonl(path.join(out, 'results.jsonl'));
    expect(lines.map((l) => l.index)).toEqual([1, 2, 3, 4, 5]);
    expect(lines.map((l) => l.status)).toEqual(['ok', 'ok', 'ok', 'error', 'error']);
    expect(lines[3]).toMatchObject({ dir: '4-p1a', error: { code: 'ERR_GOCOR_IMAGE' } });
    expect(lines[4]).toMatchObject({ dir: '5-missing', error: { code: 'ERR_GOCOR_IO' } });
    expect(run.stderr).toMatch(/pair 4 \(4-p1a\) failed: ERR_GOCOR_IMAGE/);
    expect(run.stderr).toMatch(/3 ok \(0 already complete\), 2 failed/);
    expect(walk(out).filter(isTemp)).toEqual([]);
  });

  it('records metrics that agree with a float64 computation from flow.flo', () => {
    const lines = readJsonl(path.join(out, 'results.jsonl'));
    const cases = [
      { line: lines[0], dir: '1-p1a', gu: -3, gv: -2 },
      { line: lines[1], dir: '2-p2a', gu: 3, gv: 4 },
    ];
    for (const c of cases) {
      const m = (c.line as { metrics: Record<string, number> }).metrics;
      const want = metrics64(path.join(out, c.dir, 'flow.flo'), c.gu, c.gv);
      expect(m.aepe).toBeCloseTo(want.aepe, 3);
      for (const k of ['pck1', 'pck3', 'pck5'] as const)
        expect(Math.abs((m[k] as number) - want[k])).toBeLessThan(2e-3);
      expect(m.validPixels).toBe(S * S);
    }
    // The deliberately wrong ground truth is off by 8 px in u: its AEPE cannot be small.
    expect((lines[1] as { metrics: { aepe: number } }).metrics.aepe).toBeGreaterThan(4);
    expect((lines[2] as { metrics?: unknown }).metrics).toBeUndefined();
  });

  it('report opens in headless Chromium without errors and sorts by error', async (ctx) => {
    if (!existsSync(CHROMIUM)) {
      ctx.skip(
        `${CHROMIUM} not found: install Debian's chromium package (apt-get install -y chromium) to run this test`,
      );
      return;
    }
    const rep = await runCli(['report', out, '--list', path.join(tmp, 'pairs.csv'), '--json']);
    expect(rep.code).toBe(0);
    const { path: html, pairs, failed } = JSON.parse(rep.stdout);
    expect([pairs, failed]).toEqual([5, 2]);
    const profile = mkdtempSync(path.join(tmp, 'chromium-'));
    const url = `${pathToFileURL(html).href}?sort=aepe`;
    const args = [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
      `--user-data-dir=${profile}`,
      '--enable-logging=stderr',
      '--v=0',
      '--virtual-time-budget=5000',
      '--dump-dom',
      url,
    ];
    const dom = await start(CHROMIUM, args).done;
    expect(dom.code).toBe(0);
    expect(dom.stderr.split('\n').filter((l) => /CONSOLE/.test(l))).toEqual([]);
    const body = /<body([^>]*)>/.exec(dom.stdout)?.[1] ?? '';
    expect(body).toContain('data-ready="1"');
    expect(body).toContain('data-broken-images="0"');
    expect(Number(/data-images="(\d+)"/.exec(body)?.[1])).toBeGreaterThanOrEqual(3 * 5 + 2);
    expect(dom.stdout).toMatch(/<pre id="errors"><\/pre>/);
    const order = [...dom.stdout.matchAll(/<tr data-index="(\d+)"/g)].map((m) => Number(m[1]));
    // Sorted by AEPE, worst first; pairs without ground truth after, in pair order.
    expect(order).toEqual([2, 1, 3, 4, 5]);
  });
});

/** Resolves once `count` pair folders of `out` hold a result.json (polling), or rejects when the child exits first. */
function waitForResults(child: ChildProcess, out: string, count: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      if (child.exitCode !== null) {
        clearInterval(timer);
        reject(
          new Error(
            `the batch finished (exit ${child.exitCode}) before ${count} pairs were done: make the test batch longer`,
          ),
        );
        return;
      }
      const done = existsSync(out)
        ? readdirSync(out).filter((d) => existsSync(path.join(out, d, 'result.json'))).length
        : 0;
      if (done >= count) {
        clearInterval(timer);
        resolve(done);
      }
    }, 10);
  });
}

describe('cli: batch resume and interruption', () => {
  const N = 12;
  /** `gocor batch` over N pairs into tmp/out-<name>, sent `signal` once `after` pairs have results. */
  async function interruptedBatch(name: string, flag: string, after: number, signal: NodeJS.Signals) {
    const list = writePairList(tmp, N, `${name}.csv`);
    const out = path.join(tmp, `out-${name}`);
    const { child, done } = start(process.execPath, [CLI, 'batch', list, '-o', out, flag]);
    await waitForResults(child, out, after);
    child.kill(signal);
    return { list, out, run: await done };
  }

  it('resumes after SIGKILL: complete pairs skipped, partial ones redone, no duplicate lines', async () => {
    const { list, out, run } = await interruptedBatch('resume', '--quiet', 2, 'SIGKILL');
    expect(run.signal).toBe('SIGKILL');

    // Whatever the kill left is either complete or absent: every file present is valid.
    const dirs = readdirSync(out).filter((d) => /^\d+-/.test(d));
    const complete = dirs.filter((d) => existsSync(path.join(out, d, 'result.json')));
    expect(complete.length).toBeGreaterThanOrEqual(2);
    expect(complete.length).toBeLessThan(N);
    for (const d of complete) await expectCompletePair(path.join(out, d));
    for (const d of dirs.filter((x) => !complete.includes(x))) {
      for (const f of readdirSync(path.join(out, d)).filter((x) => !isTemp(x))) {
        if (f.endsWith('.flo')) expect(readFloFile(path.join(out, d, f)).W).toBe(S);
        else expect((await imageInfo(path.join(out, d, f))).width).toBe(S);
      }
    }
    if (existsSync(path.join(out, 'results.jsonl'))) readJsonl(path.join(out, 'results.jsonl'));

    // Make one complete pair look half-written (as a non-atomic writer would leave it).
    const [first, second] = complete.sort((x, y) => Number.parseInt(x, 10) - Number.parseInt(y, 10)) as [
      string,
      string,
    ];
    rmSync(path.join(out, first, 'result.json'));
    writeFileSync(path.join(out, first, 'flow.png'), 'not a png');
    const untouched = statSync(path.join(out, second, 'result.json')).mtimeMs;

    const again = await runCli(['batch', list, '-o', out, '--json', '--quiet']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ total: N, ok: N, failed: 0, skipped: complete.length - 1 });
    const lines = readJsonl(path.join(out, 'results.jsonl'));
    expect(lines.map((l) => l.index)).toEqual(Array.from({ length: N }, (_, k) => k + 1));
    for (const l of lines) await expectCompletePair(path.join(out, l.dir as string));
    expect(statSync(path.join(out, second, 'result.json')).mtimeMs).toBe(untouched);
    expect(walk(out).filter(isTemp)).toEqual([]);
    expect(existsSync(path.join(out, '.gocor-batch.lock'))).toBe(false);
  }, 60_000);

  it('stops after the pairs in flight on SIGINT, exit 130, and resumes', async () => {
    const { list, out, run } = await interruptedBatch('sigint', '--json', 1, 'SIGINT');
    const { code, stdout, stderr } = run;
    expect(code).toBe(130);
    expect(stderr).toMatch(/stopping after the pairs in flight/);
    const summary = JSON.parse(stdout);
    expect(summary.interrupted).toBe(true);
    // Every pair it started, it finished: the folders on disk are exactly the complete pairs in results.jsonl.
    const dirs = readdirSync(out).filter((d) => /^\d+-/.test(d));
    const lines = readJsonl(path.join(out, 'results.jsonl'));
    expect(lines.map((l) => l.dir).sort()).toEqual(dirs.sort());
    expect(lines.length).toBe(summary.ok);
    for (const d of dirs) await expectCompletePair(path.join(out, d));
    const again = await runCli(['batch', list, '-o', out, '--json', '--quiet']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ ok: N, skipped: summary.ok });
  }, 60_000);
});

describe('cli: correlate', () => {
  // Deterministic features in [-1, 1).
  const feats = (n: number, seed: number) =>
    Float32Array.from({ length: n }, (_, i) => Math.sin(1.7 * i + seed) * Math.cos(0.31 * i * seed));
  const C = 8;
  /** `gocor correlate tmp/ref tmp/qry --method method -o out ...extra` */
  const correlate = (ref: string, qry: string, method: string, out: string, ...extra: string[]) =>
    runCli(['correlate', path.join(tmp, ref), path.join(tmp, qry), '--method', method, '-o', out, ...extra]);

  it('correlation-global matches float64 dot products', async () => {
    const ref = feats(C * 5 * 6, 1);
    const qry = feats(C * 4 * 3, 2);
    writeNpyFile(path.join(tmp, 'ref.npy'), [1, C, 5, 6], ref);
    writeNpyFile(path.join(tmp, 'qry.npy'), [1, C, 4, 3], qry);
    const volPath = path.join(tmp, 'vol.npy');
    const r = await correlate('ref.npy', 'qry.npy', 'correlation-global', volPath, '--json');
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).shape).toEqual([1, 12, 5, 6]);
    const vol = readNpyFile(volPath);
    expect(vol.shape).toEqual([1, 12, 5, 6]);
    let worst = 0;
    for (let q = 0; q < 12; q++) {
      for (let p = 0; p < 30; p++) {
        let dot = 0;
        let mag = 0;
        for (let c = 0; c < C; c++) {
          dot += (ref[c * 30 + p] as number) * (qry[c * 12 + q] as number);
          mag += Math.abs((ref[c * 30 + p] as number) * (qry[c * 12 + q] as number));
        }
        worst = Math.max(worst, Math.abs((vol.data[q * 30 + p] as number) - dot) / (mag + 1e-30));
      }
    }
    expect(worst).toBeLessThan(C * 2 ** -23);
  });

  it('gocor-local and gocor-global write [1, 81, H, W] and [1, H*W, H, W]; mismatched grids are one error line', async () => {
    writeNpyFile(path.join(tmp, 'qry2.npy'), [1, C, 5, 6], feats(C * 30, 3));
    const volPath = path.join(tmp, 'local.npy');
    const r = await correlate('ref.npy', 'qry2.npy', 'gocor-local', volPath, '--num-iter', '2');
    expect(r.code, r.stderr).toBe(0);
    const vol = readNpyFile(volPath);
    expect(vol.shape).toEqual([1, 81, 5, 6]);
    expect(vol.data.every(Number.isFinite)).toBe(true);
    const global = path.join(tmp, 'global.npy');
    const g = await correlate('ref.npy', 'qry2.npy', 'gocor-global', global);
    expect(g.code, g.stderr).toBe(0);
    const gv = readNpyFile(global);
    expect(gv.shape).toEqual([1, 30, 5, 6]);
    expect(gv.data.every(Number.isFinite)).toBe(true);
    const bad = await correlate('ref.npy', 'qry.npy', 'gocor-local', volPath);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/^gocor: ERR_GOCOR_SHAPE: /);
    expect(bad.stderr.trimEnd().split('\n')).toHaveLength(1);
  });
});
