/**
 * The batch under file-system trouble, run as a child process (`node dist/cli.js`; build first): a
 * results.jsonl rewrite that fails mid-run, a pair whose folder or result.json cannot be written, a
 * stale lock raced by several batches, and temporary-looking files of the user in OUTDIR.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { lockOutDir } from '../../lib/cli/batch';
import {
  CLI,
  cliBuilt,
  readJsonl,
  runCli,
  start,
  tempDir,
  texture,
  writePairList,
  writeShiftedPair,
} from '../cli/fixtures';

const S = 64;
const tmp = tempDir('gocor-relbatch-');
const data = path.join(tmp, 'data');
const LOCK = '.gocor-batch.lock';

beforeAll(async () => {
  if (!cliBuilt()) throw new Error(`${CLI} is missing: run \`npm run build:ts\` before the tests`);
  mkdirSync(data, { recursive: true });
  const tex = texture(120, 120, 11);
  for (let k = 1; k <= 3; k++) {
    await writeShiftedPair(
      tex,
      120,
      S,
      { dx: k, dy: 1 - k },
      path.join(data, `p${k}a.png`),
      path.join(data, `p${k}b.png`),
    );
  }
});

/** The pair folders of `out` that hold a result.json, with its status. */
function pairFolders(out: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const d of readdirSync(out).filter((x) => /^\d+-/.test(x))) {
    const f = path.join(out, d, 'result.json');
    if (existsSync(f) && statSync(f).isFile())
      m.set(d, (JSON.parse(readFileSync(f, 'utf8')) as { status: string }).status);
  }
  return m;
}

/** A pid that belonged to a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '']);
  return r.pid as number;
}

const noStack = (stderr: string) =>
  expect(stderr).not.toMatch(/\n\s+at .+:\d+:\d+\)?\n|Unhandled|triggerUncaughtException/);

describe('reliability: a results.jsonl rewrite that fails (item 3)', () => {
  it('ends with one error line and the lock released; the next run rebuilds results.jsonl from the pair folders', async () => {
    const N = 24;
    const list = writePairList(tmp, N, 'rewrite.csv');
    const out = path.join(tmp, 'out-rewrite');
    const results = path.join(out, 'results.jsonl');
    const { child, done } = start(process.execPath, [CLI, 'batch', list, '-o', out, '--quiet']);
    // Once a few pairs are done, results.jsonl becomes a folder: every later atomic rename over it fails.
    await new Promise<void>((resolve, reject) => {
      const timer = setInterval(() => {
        if (child.exitCode !== null) {
          clearInterval(timer);
          reject(new Error('the batch ended before the test could replace results.jsonl'));
        }
        if (!existsSync(out) || pairFolders(out).size < 2) return;
        try {
          rmSync(results, { force: true });
          mkdirSync(results);
          clearInterval(timer);
          resolve();
        } catch {
          // A rewrite landed between rm and mkdir: try again.
        }
      }, 5);
    });
    const r = await done;
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    noStack(r.stderr);
    expect(r.stderr.trimEnd().split('\n')).toEqual([
      expect.stringMatching(/^gocor: ERR_GOCOR_IO: cannot write .*results\.jsonl/),
    ]);
    expect(existsSync(path.join(out, LOCK))).toBe(false);
    // It stopped starting pairs once results.jsonl could not be kept up to date.
    expect(pairFolders(out).size).toBeLessThan(N);

    // While results.jsonl is still a folder, a rerun fails the same clean way.
    const blocked = await runCli(['batch', list, '-o', out, '--quiet']);
    expect(blocked.code).toBe(1);
    expect(blocked.stderr).toMatch(/^gocor: ERR_GOCOR_IO: cannot write .*results\.jsonl/);
    expect(existsSync(path.join(out, LOCK))).toBe(false);

    // Room again: the resume writes one line per pair folder, in pair order, agreeing with each result.json.
    rmSync(results, { recursive: true });
    const again = await runCli(['batch', list, '-o', out, '--json', '--quiet']);
    expect(again.code, again.stderr).toBe(0);
    const lines = readJsonl(results);
    expect(lines.map((l) => l.index)).toEqual(Array.from({ length: N }, (_, k) => k + 1));
    const folders = pairFolders(out);
    expect(folders.size).toBe(N);
    for (const l of lines) expect(folders.get(l.dir as string)).toBe(l.status);
  }, 120_000);
});

describe('reliability: one pair whose outputs cannot be written (item 5)', () => {
  for (const jobs of ['1', '2']) {
    it(`is that pair's ERR_GOCOR_IO and the batch goes on (-j ${jobs})`, async () => {
      const list = writePairList(tmp, 5, `outputs-${jobs}.csv`);
      const out = path.join(tmp, `out-outputs-${jobs}`);
      mkdirSync(out);
      // A file where pair 2's folder goes; a folder where pair 3's result.json goes.
      writeFileSync(path.join(out, '2-p2a'), 'not a folder');
      mkdirSync(path.join(out, '3-p3a', 'result.json'), { recursive: true });
      const r = await runCli(['batch', list, '-o', out, '-j', jobs, '--json']);
      expect(r.code).toBe(1);
      noStack(r.stderr);
      expect(r.stderr).not.toMatch(/^gocor: ERR_GOCOR/m);
      expect(r.stderr).toMatch(/pair 2 \(2-p2a\) failed: ERR_GOCOR_IO: .*2-p2a/);
      expect(r.stderr).toMatch(/pair 3 \(3-p3a\) failed: ERR_GOCOR_IO: .*result\.json/);
      expect(JSON.parse(r.stdout)).toMatchObject({ total: 5, ok: 3, failed: 2, notRun: 0 });
      const lines = readJsonl(path.join(out, 'results.jsonl'));
      expect(lines.map((l) => [l.index, l.status, (l.error as { code?: string } | undefined)?.code])).toEqual([
        [1, 'ok', undefined],
        [2, 'error', 'ERR_GOCOR_IO'],
        [3, 'error', 'ERR_GOCOR_IO'],
        [4, 'ok', undefined],
        [5, 'ok', undefined],
      ]);
      const folders = pairFolders(out);
      for (const d of ['1-p1a', '4-p1a', '5-p2a']) expect(folders.get(d)).toBe('ok');
      expect(readFileSync(path.join(out, '2-p2a'), 'utf8')).toBe('not a folder');
      expect(existsSync(path.join(out, LOCK))).toBe(false);
    }, 60_000);
  }

  it('`match -o` naming an existing file is one ERR_GOCOR_IO line, not INTERNAL', async () => {
    const file = path.join(tmp, 'a-file');
    writeFileSync(file, 'x');
    const r = await runCli(['match', path.join(data, 'p1a.png'), path.join(data, 'p1b.png'), '-o', file]);
    expect(r.code).toBe(1);
    expect(r.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^gocor: ERR_GOCOR_IO: .*a-file/)]);
    const b = await runCli(['batch', writePairList(tmp, 1, 'one.csv'), '-o', file, '--quiet']);
    expect(b.code).toBe(1);
    expect(b.stderr.trimEnd().split('\n')).toEqual([expect.stringMatching(/^gocor: ERR_GOCOR_IO: .*a-file/)]);
    expect(readFileSync(file, 'utf8')).toBe('x');
  });
});

describe('reliability: a stale lock raced by several batches (item 6)', () => {
  const TRIALS = 30;

  it(`never lets two processes hold OUTDIR (${TRIALS} trials, 3 processes at once)`, async () => {
    const batchJs = path.join(path.dirname(CLI), 'cli', 'batch.js');
    // Each child waits for the same instant, then tries to lock; a winner holds the lock a while and
    // reports when it held it (a late starter may lock after the first has released: that is fine).
    const script = `
      const { lockOutDir } = require(${JSON.stringify(batchJs)});
      const [dir, at] = process.argv.slice(1);
      while (Date.now() < Number(at)) {}
      lockOutDir(dir).then(
        async (release) => {
          const from = Date.now();
          await new Promise((r) => setTimeout(r, 300));
          const to = Date.now();
          await release();
          process.stdout.write(JSON.stringify([from, to]));
        },
        (err) => process.stdout.write(JSON.stringify(err.code)),
      );`;
    let contended = 0;
    for (let t = 0; t < TRIALS; t++) {
      const dir = path.join(tmp, `lock-${t}`);
      mkdirSync(dir);
      writeFileSync(path.join(dir, LOCK), String(deadPid()));
      const at = Date.now() + 800;
      const runs = Array.from({ length: 3 }, () => {
        const child = spawn(process.execPath, ['-e', script, dir, String(at)], {
          stdio: ['ignore', 'pipe', 'inherit'],
        });
        let stdout = '';
        child.stdout.on('data', (d) => {
          stdout += d;
        });
        return new Promise<unknown>((resolve) => child.on('close', () => resolve(JSON.parse(stdout))));
      });
      const outcomes = await Promise.all(runs);
      const held = outcomes.filter((o): o is [number, number] => Array.isArray(o));
      expect(held.length).toBeGreaterThanOrEqual(1);
      for (const o of outcomes) if (!Array.isArray(o)) expect(o).toBe('ERR_GOCOR_IO');
      for (const [i, x] of held.entries()) {
        for (const y of held.slice(i + 1)) expect(x[0] < y[1] && y[0] < x[1], JSON.stringify(held)).toBe(false);
      }
      if (held.length < 3) contended++;
      expect(existsSync(path.join(dir, LOCK))).toBe(false);
    }
    // The children did meet at the lock (otherwise this test proves nothing).
    expect(contended).toBeGreaterThan(TRIALS / 2);
  }, 180_000);

  it(`in one process too: exactly one of three concurrent lockOutDir calls wins (${TRIALS} trials)`, async () => {
    for (let t = 0; t < TRIALS; t++) {
      const dir = path.join(tmp, `lock-in-${t}`);
      mkdirSync(dir);
      writeFileSync(path.join(dir, LOCK), String(deadPid()));
      const settled = await Promise.allSettled([lockOutDir(dir), lockOutDir(dir), lockOutDir(dir)]);
      const won = settled.filter((s) => s.status === 'fulfilled');
      expect(won).toHaveLength(1);
      for (const s of settled) if (s.status === 'rejected') expect(s.reason).toMatchObject({ code: 'ERR_GOCOR_IO' });
      expect(readFileSync(path.join(dir, LOCK), 'utf8').trim()).toBe(String(process.pid));
      await (won[0] as PromiseFulfilledResult<() => Promise<void>>).value();
      expect(existsSync(path.join(dir, LOCK))).toBe(false);
    }
  });
});

describe("reliability: the user's own .tmp files survive (item 7)", () => {
  it('batch and match -o delete only gocor temporaries whose writer is gone', async () => {
    const dead = deadPid();
    const plant = (dir: string) => {
      mkdirSync(dir, { recursive: true });
      const files = {
        user: '.thesis-draft.tmp',
        userLike: '.flow.flo.1234.deadbeef.tmp',
        live: `.flow.flo.gocor-${process.pid}-0123abcd.tmp`,
        stale: `.flow.flo.gocor-${dead}-0123abcd.tmp`,
      };
      for (const f of Object.values(files)) writeFileSync(path.join(dir, f), 'precious');
      return files;
    };
    const check = (dir: string, files: ReturnType<typeof plant>) => {
      expect(readFileSync(path.join(dir, files.user), 'utf8')).toBe('precious');
      expect(readFileSync(path.join(dir, files.userLike), 'utf8')).toBe('precious');
      expect(readFileSync(path.join(dir, files.live), 'utf8')).toBe('precious');
      expect(existsSync(path.join(dir, files.stale))).toBe(false);
    };

    const out = path.join(tmp, 'out-temps');
    const top = plant(out);
    const pair = plant(path.join(out, '1-p1a'));
    const r = await runCli(['batch', writePairList(tmp, 2, 'temps.csv'), '-o', out, '--quiet']);
    expect(r.code, r.stderr + readFileSync(path.join(out, 'results.jsonl'), 'utf8')).toBe(0);
    check(out, top);
    check(path.join(out, '1-p1a'), pair);

    const single = path.join(tmp, 'out-temps-match');
    const own = plant(single);
    const m = await runCli(['match', path.join(data, 'p1a.png'), path.join(data, 'p1b.png'), '-o', single, '--quiet']);
    expect(m.code, m.stderr).toBe(0);
    check(single, own);
    // gocor's own temporaries carry its marker, so they can never be mistaken for the user's.
    expect(
      readdirSync(single)
        .filter((f) => f.endsWith('.tmp'))
        .sort(),
    ).toEqual([own.userLike, own.live, own.user].sort());
  }, 60_000);
});
