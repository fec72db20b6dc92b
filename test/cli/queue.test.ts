/**
 * `gocor queue add | worker | status` on a real redis-server (started here on a free port, stopped
 * after). Smoke and numerics: 22 small pairs with known shifts (one bad) through three workers, one
 * SIGKILLed mid-job and a fourth started: every pair exactly once in folders and results.jsonl, in
 * pair order, its flow on the true shift. Adding twice adds nothing; a worker started before `add`
 * works. Bad input: Redis unreachable is one error line and exit 1. SIGTERM during a job finishes it
 * and exits 0.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CLI,
  type CliRun,
  cliBuilt,
  readFloFile,
  readJsonl,
  runCli,
  start,
  tempDir,
  texture,
  writeShiftedPair,
} from './fixtures';

const REDIS_SERVER = (() => {
  try {
    return execFileSync('sh', ['-c', 'command -v redis-server'], { encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
})();

if (!REDIS_SERVER)
  console.warn('redis-server not found (Debian: apt-get install redis-server): the queue tests are skipped');

const S = 64;
const TEX_W = 120;
const tmp = tempDir('gocor-queue-');
const data = path.join(tmp, 'data');
const SHIFTS = [
  { dx: 3, dy: 2 },
  { dx: -2, dy: 4 },
  { dx: 1, dy: -3 },
  { dx: 0, dy: 0 },
];
/** 21 good pairs cycling over the shifts, then one whose image is missing: 22 in all. */
const GOOD = 21;
const TOTAL = GOOD + 1;

let redis: ChildProcess | undefined;
let url = '';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

/** Starts redis-server on a free port in its own folder, no persistence; resolves once it accepts connections. */
async function startRedis(): Promise<string> {
  const port = await freePort();
  const dir = path.join(tmp, 'redis');
  mkdirSync(dir, { recursive: true });
  redis = spawn(
    REDIS_SERVER,
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', dir, '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let log = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server did not start:\n${log}`)), 20_000);
    redis?.stdout?.on('data', (d) => {
      log += d;
      if (log.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    redis?.once('exit', (code) => reject(new Error(`redis-server exited with ${code}:\n${log}`)));
  });
  return `redis://127.0.0.1:${port}`;
}

beforeAll(async () => {
  if (!cliBuilt()) throw new Error(`${CLI} is missing: run \`npm run build:ts\` before the tests`);
  if (!REDIS_SERVER) return;
  mkdirSync(data, { recursive: true });
  const tex = texture(TEX_W, TEX_W, 11);
  for (const [k, d] of SHIFTS.entries()) {
    await writeShiftedPair(tex, TEX_W, S, d, path.join(data, `s${k}a.png`), path.join(data, `s${k}b.png`));
  }
  const bigTex = texture(260, 260, 5);
  await writeShiftedPair(bigTex, 260, 224, { dx: 2, dy: 1 }, path.join(data, 'biga.png'), path.join(data, 'bigb.png'));
  url = await startRedis();
});

afterAll(() => {
  redis?.kill('SIGTERM');
});

/** A worker process and what it has printed so far. */
interface RunningWorker {
  child: ChildProcess;
  done: Promise<CliRun>;
  stderr: () => string;
}

function worker(queue: string, extra: string[] = []): RunningWorker {
  const { child, done } = start(
    process.execPath,
    [CLI, 'queue', 'worker', '--redis', url, '--queue', queue, '--lock-duration', '2', '--threads', '1', ...extra],
    { env: { ...process.env, NODE_DEBUG: 'gocor' } },
  );
  let err = '';
  child.stderr?.on('data', (d) => {
    err += d;
  });
  return { child, done, stderr: () => err };
}

async function waitFor(
  what: string,
  test: () => boolean | Promise<boolean>,
  ms = 90_000,
  everyMs = 200,
): Promise<void> {
  const end = Date.now() + ms;
  while (!(await test())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

interface StatusJson {
  total: number;
  completed: number;
  failed: number;
  waiting: number;
  active: number;
  results: string[];
}

async function status(queue: string): Promise<StatusJson> {
  const r = await runCli(['queue', 'status', '--redis', url, '--queue', queue, '--json']);
  expect(r.stderr).toBe('');
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout);
}

/** Every file under `dir`, recursively. */
function walk(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? walk(path.join(dir, e.name)) : [path.join(dir, e.name)],
  );
}

function median(values: Float64Array): number {
  const s = Float64Array.from(values).sort();
  return s[s.length >> 1] as number;
}

describe('cli: queue smoke and usage', () => {
  it('has --help with examples for queue and each subcommand; a usage error exits 2', async () => {
    for (const cmd of [[], ['add'], ['worker'], ['status']]) {
      const r = await runCli(['queue', ...cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toContain('Examples:');
      expect(r.stdout).toContain(`gocor queue ${cmd[0] ?? 'add'}`);
    }
    const both = await runCli(['queue', 'add', '-o', path.join(tmp, 'never')]);
    expect(both.code).toBe(2);
    expect(both.stderr).toMatch(/^gocor: ERR_GOCOR_INVALID_ARG: give either a pair list or --dir DIR .*\n$/);
    const conc = await runCli(['queue', 'worker', '--concurrency', '0']);
    expect(conc.code).toBe(2);
    expect(conc.stderr).toMatch(/^gocor: ERR_GOCOR_INVALID_ARG: .*expected an integer between 1 and 64.*\n$/);
  });

  it('without the optional bullmq package: one line naming it and the install command, exit 1', async () => {
    const hide = path.join(__dirname, 'without-bullmq.cjs');
    const r = await runCli(['queue', 'status', '--redis', 'redis://127.0.0.1:1', '--queue', 'x'], {
      env: { ...process.env, NODE_OPTIONS: `--require ${hide}` },
    });
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(
      /^gocor: ERR_GOCOR_IO: gocor queue needs the optional package bullmq: run `npm install bullmq@\^5` .*\n$/,
    );
    expect(r.stderr.split('\n')).toHaveLength(2);
  });
});

describe.skipIf(!REDIS_SERVER)('cli: queue on a real redis-server', () => {
  it('runs 22 pairs on three workers, one SIGKILLed mid-job, exactly once and in pair order', async () => {
    const list = path.join(tmp, 'pairs.csv');
    const lines = ['a,b'];
    for (let i = 0; i < GOOD; i++) lines.push(`data/s${i % SHIFTS.length}a.png,data/s${i % SHIFTS.length}b.png`);
    lines.push('data/missing.png,data/s0b.png');
    writeFileSync(list, `${lines.join('\n')}\n`);
    const out = path.join(tmp, 'out');
    const add = ['queue', 'add', list, '-o', out, '--redis', url, '--queue', 'main', '--quality', 'fast'];

    // Workers started before anything is queued wait for the jobs.
    const w1 = worker('main');
    const w2 = worker('main');
    await waitFor('workers 1 and 2 to connect', () => [w1, w2].every((w) => w.stderr().includes('on queue main')));
    const first = await runCli([...add, '--attempts', '2']);
    expect(first.code).toBe(0);
    expect(first.stderr).toContain(`added ${TOTAL} of ${TOTAL} pairs`);
    const again = await runCli([...add, '--attempts', '2', '--json']);
    expect(again.code).toBe(0);
    expect(JSON.parse(again.stdout)).toMatchObject({ total: TOTAL, added: 0 });

    const w3 = worker('main');
    // Killed right after it starts a pair: the pair is in flight, locked by a dead worker.
    const inFlight = () => {
      const events = [...w2.stderr().matchAll(/pair (\d+) \(\S+\) (started|ok|failed)/g)];
      const last = events.at(-1);
      return last?.[2] === 'started' ? Number(last[1]) : undefined;
    };
    await waitFor('worker 2 to start a pair', () => inFlight() !== undefined, 60_000, 5);
    w2.child.kill('SIGKILL');
    expect((await w2.done).signal).toBe('SIGKILL');
    // The pair it had started and not finished when it died.
    const killed = inFlight() as number;
    expect(killed).toBeGreaterThan(0);
    const w4 = worker('main');

    let s = await status('main');
    await waitFor('every pair to finish', async () => {
      s = await status('main');
      return s.completed + s.failed === s.total;
    });
    expect(s).toMatchObject({ total: TOTAL, completed: GOOD, failed: 1, waiting: 0, active: 0 });
    expect(s.results).toEqual([path.join(out, 'results.jsonl')]);
    const line = await runCli(['queue', 'status', '--redis', url, '--queue', 'main']);
    expect(line.stdout).toMatch(
      new RegExp(`^gocor queue main: ${TOTAL}/${TOTAL} done \\(${GOOD} completed, 1 failed\\)`),
    );

    // Exactly one line per pair, in pair order, batch's format; the killed worker's pair was redone.
    const rows = readJsonl(path.join(out, 'results.jsonl'));
    expect(rows.map((r) => r.index)).toEqual(Array.from({ length: TOTAL }, (_, i) => i + 1));
    for (const [i, r] of rows.entries()) {
      const index = i + 1;
      expect(r.dir).toBe(index === TOTAL ? `${index}-missing` : `${index}-s${i % SHIFTS.length}a`);
      expect(r.status).toBe(index === TOTAL ? 'error' : 'ok');
      // The same record as the pair's result.json (batch's line is result.json plus `dir`).
      const rec = JSON.parse(readFileSync(path.join(out, r.dir as string, 'result.json'), 'utf8'));
      expect({ ...rec, dir: r.dir }).toEqual(r);
    }
    expect(rows[killed - 1]?.status).toBe(killed === TOTAL ? 'error' : 'ok');
    const redone = new RegExp(`pair ${killed} \\(\\S+\\) (ok in|failed:)`);
    expect([w1, w3, w4].filter((w) => redone.test(w.stderr()))).toHaveLength(1);
    expect(rows[TOTAL - 1]?.error).toMatchObject({ code: 'ERR_GOCOR_IO' });
    expect(String((rows[TOTAL - 1]?.error as { message: string }).message)).toContain('missing.png');

    // Each flow is on its pair's true shift: (-dx, -dy) everywhere (median over the image, float64 here).
    for (let i = 0; i < GOOD; i++) {
      const d = SHIFTS[i % SHIFTS.length] as { dx: number; dy: number };
      const flo = readFloFile(path.join(out, `${i + 1}-s${i % SHIFTS.length}a`, 'flow.flo'));
      expect([flo.W, flo.H]).toEqual([S, S]);
      expect(Math.abs(median(flo.u) + d.dx)).toBeLessThan(0.25);
      expect(Math.abs(median(flo.v) + d.dy)).toBeLessThan(0.25);
    }

    // One folder per pair, no temporary file left by the killed worker.
    const entries = readdirSync(out).sort();
    expect(entries).toEqual([...rows.map((r) => r.dir as string), 'results.jsonl'].sort());
    expect(walk(out).filter((f) => /\.tmp$/.test(f))).toEqual([]);

    // The worker started before `add` did work; SIGTERM stops the idle workers with exit 0.
    expect(w1.stderr()).toMatch(/pair \d+ \(\S+\) ok in/);
    for (const w of [w1, w3, w4]) w.child.kill('SIGTERM');
    for (const w of [w1, w3, w4]) expect((await w.done).code).toBe(0);
  }, 180_000);

  it('SIGTERM during a job finishes that pair, takes no other and exits 0', async () => {
    const list = path.join(tmp, 'big.csv');
    writeFileSync(list, 'data/biga.png,data/bigb.png\ndata/bigb.png,data/biga.png\n');
    const out = path.join(tmp, 'out-term');
    const added = await runCli(['queue', 'add', list, '-o', out, '--redis', url, '--queue', 'term']);
    expect(added.code).toBe(0);
    const w = worker('term');
    await waitFor('the worker to start pair 1', () => w.stderr().includes('pair 1 (1-biga) started'), 60_000);
    w.child.kill('SIGTERM');
    const r = await w.done;
    expect(r.code).toBe(0);
    expect(r.stderr).toMatch(/pair 1 \(1-biga\) ok in/);
    expect(r.stderr).not.toContain('pair 2 (2-bigb) started');
    const rec = JSON.parse(readFileSync(path.join(out, '1-biga', 'result.json'), 'utf8'));
    expect(rec.status).toBe('ok');
    expect(await status('term')).toMatchObject({ total: 2, completed: 1, failed: 0, waiting: 1, active: 0 });
  }, 120_000);

  it('a pair whose workers die three times is failed with its reason, and results.jsonl still says so', async () => {
    const list = path.join(tmp, 'doomed.csv');
    writeFileSync(list, 'data/biga.png,data/bigb.png\n');
    const out = path.join(tmp, 'out-doomed');
    const add = ['queue', 'add', list, '-o', out, '--redis', url, '--queue', 'doomed', '--quality', 'best'];
    expect((await runCli(add)).code).toBe(0);
    // BullMQ gives a dead worker's job back twice (maxStalledCount 2); the third death fails it.
    for (let death = 1; death <= 3; death++) {
      const w = worker('doomed');
      await waitFor(
        `death ${death}: the worker to start the pair`,
        () => w.stderr().includes('pair 1 (1-biga) started'),
        60_000,
        5,
      );
      w.child.kill('SIGKILL');
      await w.done;
    }
    const last = worker('doomed');
    let s = await status('doomed');
    await waitFor('the pair to be failed', async () => {
      s = await status('doomed');
      return s.failed === 1;
    });
    expect(s).toMatchObject({ total: 1, completed: 0, failed: 1, results: [path.join(out, 'results.jsonl')] });
    const rows = readJsonl(path.join(out, 'results.jsonl'));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatchObject({
      index: 1,
      dir: '1-biga',
      status: 'error',
      a: { path: path.join(data, 'biga.png') },
    });
    expect((rows[0]?.error as { message: string }).message).toMatch(/stalled/);
    expect(walk(out).filter((f) => /\.tmp$/.test(f))).toEqual([]);
    last.child.kill('SIGTERM');
    expect((await last.done).code).toBe(0);
  }, 150_000);

  it('Redis unreachable: one error line and exit 1 for add, worker and status', async () => {
    const port = await freePort();
    const dead = `redis://127.0.0.1:${port}`;
    const list = path.join(tmp, 'one.csv');
    writeFileSync(list, 'data/s0a.png,data/s0b.png\n');
    const runs = await Promise.all([
      runCli(['queue', 'add', list, '-o', path.join(tmp, 'out-dead'), '--redis', dead, '--queue', 'x']),
      runCli(['queue', 'worker', '--redis', dead, '--queue', 'x']),
      runCli(['queue', 'status', '--redis', dead, '--queue', 'x']),
    ]);
    for (const r of runs) {
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(`^gocor: ERR_GOCOR_IO: cannot reach Redis at ${dead} \\(connect ECONNREFUSED [^)]*\\); .*\\n$`),
      );
    }
    const bad = await runCli(['queue', 'status', '--redis', 'http://x', '--queue', 'x']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toBe(
      'gocor: ERR_GOCOR_INVALID_ARG: Expected a URL redis://host[:port][/db] (or rediss://) for --redis but received "http://x"\n',
    );
  });
});
