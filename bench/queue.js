#!/usr/bin/env node
// `node bench/queue.js [--quick]`: `gocor queue` throughput with 1 and 2 workers, and the queue's own
// overhead per job, each against `gocor batch -j 1` on the same pairs in the same run (the reference).
// Starts its own redis-server (Debian package `redis-server`) on a free port; prints a markdown table.
//   real pairs:    basketball1/2 (examples/, 640x480), default quality, 8 copies in the list
//   each run three times, interleaved, best of three
//   trivial pairs: a 32x32 crop of them, --quality fast: the time is mostly the queue and the files
// Throughput is pairs / (last job finished - first job started), read from BullMQ's own job
// timestamps, so worker start-up (loading the addon, connecting) is not counted; batch's is its
// summary's `seconds` (its own start-up excluded too). The queue's own overhead per job is the time
// outside the pairs' work (the sum of each line's timings.totalMs) per job, for the trivial pairs
// with one worker: fetching the job, storing its line, moving it to completed; batch's counterpart
// (its results.jsonl rewrites) is printed beside it.
'use strict';
const { spawn, spawnSync } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const sharp = require('sharp');
const { Queue } = require('bullmq');

const root = path.join(__dirname, '..');
const cli = path.join(root, 'dist', 'cli.js');
const quick = process.argv.includes('--quick');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'gocor-bench-queue-'));
const children = [];

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** Starts `args` and resolves once its output contains `ready`. */
function startUntil(cmd, args, ready) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let log = '';
  return new Promise((resolve, reject) => {
    const onData = (d) => {
      log += d;
      if (log.includes(ready)) resolve(child);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => reject(new Error(`${cmd} ${args.join(' ')} exited with ${code}:\n${log}`)));
  });
}

function gocor(args) {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`gocor ${args.join(' ')} exited with ${r.status}:\n${r.stderr}`);
  return r.stdout;
}

function writeList(name, a, b, n) {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, `${Array.from({ length: n }, () => `${a},${b}`).join('\n')}\n`);
  return file;
}

/** Milliseconds spent inside the pairs themselves (each result line's timings.totalMs), summed. */
function pairMs(out) {
  return fs
    .readFileSync(path.join(out, 'results.jsonl'), 'utf8')
    .trimEnd()
    .split('\n')
    .reduce((sum, l) => sum + JSON.parse(l).timings.totalMs, 0);
}

function batchSeconds(list, out, extra) {
  return JSON.parse(gocor(['batch', list, '-o', out, '-q', '--json', ...extra])).seconds;
}

/** Runs `list` through the queue with `workers` workers; seconds from first job started to last finished. */
async function queueSeconds(redis, name, list, out, extra, workers) {
  const ws = [];
  for (let i = 0; i < workers; i++) {
    const w = spawn(process.execPath, [cli, 'queue', 'worker', '--redis', redis, '--queue', name, '-q'], {
      stdio: 'inherit',
    });
    children.push(w);
    ws.push(w);
  }
  // The workers print nothing with -q: wait until they are connected (BullMQ lists them).
  const u = new URL(redis);
  const q = new Queue(name, { connection: { host: u.hostname, port: Number(u.port) } });
  for (let t = 0; (await q.getWorkers()).length < workers; t++) {
    if (t > 600) throw new Error('workers did not connect');
    await new Promise((r) => setTimeout(r, 50));
  }
  gocor(['queue', 'add', list, '-o', out, '--redis', redis, '--queue', name, ...extra]);
  // Polled in this process: a `gocor queue status` process every few 100 ms would take CPU from the workers.
  for (;;) {
    const c = await q.getJobCounts('completed', 'failed', 'active', 'waiting', 'delayed');
    if (c.failed) throw new Error(`${c.failed} pairs failed`);
    if (c.active + c.waiting + c.delayed === 0 && fs.existsSync(path.join(out, 'results.jsonl'))) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const jobs = await q.getJobs(['completed']);
  const first = Math.min(...jobs.map((j) => j.processedOn));
  const last = Math.max(...jobs.map((j) => j.finishedOn));
  await q.close();
  for (const w of ws) w.kill('SIGTERM');
  await Promise.all(ws.map((w) => new Promise((r) => (w.exitCode !== null ? r() : w.once('exit', r)))));
  return (last - first) / 1000;
}

async function main() {
  if (!fs.existsSync(cli)) throw new Error(`${cli} is missing: npm run build:ts`);
  const port = await freePort();
  const redis = `redis://127.0.0.1:${port}`;
  await startUntil(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--dir', tmp, '--save', '', '--appendonly', 'no'],
    'Ready to accept connections',
  );
  const ex = (f) => path.join(root, 'examples', f);
  const crop = { left: 300, top: 200, width: 32, height: 32 };
  await sharp(ex('basketball1.png')).extract(crop).toFile(path.join(tmp, 't1.png'));
  await sharp(ex('basketball2.png')).extract(crop).toFile(path.join(tmp, 't2.png'));

  const nReal = quick ? 4 : 8;
  const nTrivial = quick ? 40 : 100;
  const reps = quick ? 1 : 3;
  const real = writeList('real.csv', ex('basketball1.png'), ex('basketball2.png'), nReal);
  const trivial = writeList('trivial.csv', path.join(tmp, 't1.png'), path.join(tmp, 't2.png'), nTrivial);
  const fast = ['--quality', 'fast'];
  // Best of `reps`, the runs of each kind interleaved so that other load on the machine hits them alike.
  // Each kind keeps its seconds and, from the same run, the time spent inside its pairs.
  const best = {};
  const keep = (k, seconds, out) => {
    if (!best[k] || seconds < best[k].seconds) best[k] = { seconds, workMs: pairMs(out) };
  };
  for (let rep = 0; rep < reps; rep++) {
    const o = (n) => path.join(tmp, `${n}-${rep}`);
    console.error(
      `run ${rep + 1} of ${reps}: ${nReal} real pairs (batch -j 1, queue 1 and 2 workers), ${nTrivial} trivial pairs (batch -j 1, queue 1 worker)...`,
    );
    keep('rb', batchSeconds(real, o('rb'), []), o('rb'));
    keep('r1', await queueSeconds(redis, `real1-${rep}`, real, o('r1'), [], 1), o('r1'));
    keep('r2', await queueSeconds(redis, `real2-${rep}`, real, o('r2'), [], 2), o('r2'));
    keep('tb', batchSeconds(trivial, o('tb'), fast), o('tb'));
    keep('t1', await queueSeconds(redis, `trivial1-${rep}`, trivial, o('t1'), fast, 1), o('t1'));
  }
  const [rb, r1, r2, tb, t1] = ['rb', 'r1', 'r2', 'tb', 't1'].map((k) => best[k].seconds);

  const cpu = (os.cpus()[0] || { model: 'unknown' }).model.trim();
  const rate = (n, s) => (n / s).toFixed(2);
  console.log(
    `Machine: ${cpu}, ${os.cpus().length} threads, Node ${process.version}; ${new Date().toISOString().slice(0, 10)}\n`,
  );
  console.log('| pairs | run | seconds | pairs/s | vs batch -j 1 |');
  console.log('|---|---|---|---|---|');
  console.log(
    `| ${nReal} basketball 640x480 | batch -j 1 (reference) | ${rb.toFixed(2)} | ${rate(nReal, rb)} | 1.00 |`,
  );
  console.log(`| | queue, 1 worker | ${r1.toFixed(2)} | ${rate(nReal, r1)} | ${(rb / r1).toFixed(2)} |`);
  console.log(`| | queue, 2 workers | ${r2.toFixed(2)} | ${rate(nReal, r2)} | ${(rb / r2).toFixed(2)} |`);
  console.log(
    `| ${nTrivial} trivial 32x32, fast | batch -j 1 (reference) | ${tb.toFixed(2)} | ${rate(nTrivial, tb)} | 1.00 |`,
  );
  console.log(`| | queue, 1 worker | ${t1.toFixed(2)} | ${rate(nTrivial, t1)} | ${(tb / t1).toFixed(2)} |`);
  // What is not spent inside a pair (matching and writing its files) is the runner's own time per pair.
  const own = (k) => ((best[k].seconds * 1000 - best[k].workMs) / nTrivial).toFixed(1);
  const work = (k) => (best[k].workMs / nTrivial).toFixed(1);
  console.log(
    `\nOwn time per pair outside the pair's work (trivial pairs, 1 worker / -j 1): queue ${own('t1')} ms per job, ` +
      `batch ${own('tb')} ms per pair (the pair's work itself: ${work('t1')} ms in the queue, ${work('tb')} ms in batch)`,
  );
}

main()
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  })
  .finally(() => {
    for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
    fs.rmSync(tmp, { recursive: true, force: true });
  });
