#!/usr/bin/env node
// `npm run bench:match`: issue 16 target 4, `match` with the default preset through the public API:
//   - a 512x512 pair (aloe cropped at (300, 300)), at one and two threads: the process's CPU time
//     per call (user + system, page faults included; median of the calls) and the wall time (the
//     best call: on a shared machine other jobs only ever add to it), with the per-stage wall
//     times that `result.timings` reports (of that best call) and the rest of its wall time
//     (outside the stages: serial work on the main thread); the thread scaling is the ratio
//     of the best wall times, one thread over two, each round alternating the two thread counts;
//     next to it the machine's own two-thread scaling, measured in each round (machineProbe);
//   - aloe at full resolution (1282x1110): peak RSS of a fresh process that loads both images and
//     runs one match (getrusage maxRSS), at one and two threads, next to the RSS the process had
//     before matching (Node + sharp + the decoded images).
// Needs the built addon (npm run build) and ../shared/data/pairs/aloe{L,R}.jpg.
//   node bench/match-speed.js [--reps N] [--json] [--quality fast|balanced|best] [--options JSON]
//                             [--no-rss]
// --options: more match options for every call (e.g. '{"numIter":{"local":3}}'); --no-rss: the
// 512x512 timings only (no aloe RSS processes).
'use strict';
const { spawnSync } = require('node:child_process');
const path = require('node:path');
const { Worker } = require('node:worker_threads');
const gocor = require('..');

const arg = (name, fallback) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const reps = Number(arg('--reps', 9));
const quality = arg('--quality', 'balanced');
const asJson = process.argv.includes('--json');
const withRss = !process.argv.includes('--no-rss');
let extra;
try {
  extra = JSON.parse(arg('--options', '{}'));
} catch (err) {
  console.error(`--options: not JSON (${err.message})`);
  process.exit(2);
}
const matchOptions = (threads) => ({ ...extra, threads, quality });
const PAIRS = path.resolve(__dirname, '../../shared/data/pairs');
const A = path.join(PAIRS, 'aloeL.jpg');
const B = path.join(PAIRS, 'aloeR.jpg');

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

// (C, H, W) crop of a CHW image.
function crop(im, x0, y0, w, h) {
  const C = im.channels;
  const data = new Float32Array(C * w * h);
  for (let c = 0; c < C; c++) {
    for (let y = 0; y < h; y++) {
      const src = (c * im.height + y0 + y) * im.width + x0;
      data.set(im.data.subarray(src, src + w), (c * h + y) * w);
    }
  }
  return { data, channels: C, height: h, width: w };
}

// One timed match: CPU ms, wall ms and the stage times.
async function timeOne(a, b, threads) {
  const c = process.cpuUsage();
  const t = process.hrtime.bigint();
  const r = await gocor.match(a, b, matchOptions(threads));
  const wall = Number(process.hrtime.bigint() - t) / 1e6;
  const d = process.cpuUsage(c);
  return { cpu: (d.user + d.system) / 1e3, wall, stages: r.timings ?? {} };
}

// What two threads of this machine give at the moment: the same arithmetic loop (~100 ms, no
// memory traffic) in one worker thread, then in two at once; 2 * t1 / t2. On a VM whose host is
// busy this falls well below 2 (2 vCPUs here: 1.1-1.97 within an hour), and no program's
// two-thread speed-up can exceed it, so each round measures it next to its matches.
const SPIN = `
const { parentPort } = require('node:worker_threads');
parentPort.on('message', (n) => {
  const t = process.hrtime.bigint();
  let x = 0;
  for (let i = 0; i < n; i++) x = x * 0.9999999 + 1e-7;
  parentPort.postMessage({ ms: Number(process.hrtime.bigint() - t) / 1e6, x });
});`;
async function machineProbe() {
  const workers = [new Worker(SPIN, { eval: true }), new Worker(SPIN, { eval: true })];
  const spin = (w, n) =>
    new Promise((resolve) => {
      w.once('message', (m) => resolve(m.ms));
      w.postMessage(n);
    });
  const n = 1e8;
  await Promise.all(workers.map((w) => spin(w, n / 4))); // compiled
  return {
    async scaling() {
      const one = await spin(workers[0], n);
      const t = process.hrtime.bigint();
      await Promise.all(workers.map((w) => spin(w, n)));
      return (2 * one) / (Number(process.hrtime.bigint() - t) / 1e6);
    },
    close: () => Promise.all(workers.map((w) => w.terminate())),
  };
}

// `reps` rounds after one warm-up call each, alternating one and two threads: per thread count
// the median CPU time, and the best wall time with that call's stage times; per round, the
// machine's own two-thread scaling (machineProbe) next to the round's speed-up.
async function timeMatch(a, b) {
  const runs = { 1: [], 2: [] };
  const machine = [];
  const probe = await machineProbe();
  for (const t of [1, 2]) await gocor.match(a, b, matchOptions(t));
  try {
    for (let i = 0; i < reps; i++) {
      machine.push(await probe.scaling());
      for (const t of [1, 2]) runs[t].push(await timeOne(a, b, t));
    }
  } finally {
    await probe.close();
  }
  // outside_ms: the best call's wall time outside its stages (validation, the binding's copies of
  // the images, queueing, the result's conversion): serial work on the main thread.
  const summary = (rs) => {
    const best = rs.reduce((p, q) => (q.wall < p.wall ? q : p));
    const inStages = Object.values(best.stages).reduce((a, b) => a + b, 0);
    return {
      cpu_ms: median(rs.map((r) => r.cpu)),
      wall_ms: best.wall,
      outside_ms: best.wall - inStages,
      stages: best.stages,
    };
  };
  const rounds = runs[1].map((r, i) => ({ speedup: r.wall / runs[2][i].wall, machine: machine[i] }));
  return { one: summary(runs[1]), two: summary(runs[2]), rounds };
}

// Child mode: one match of the full aloe pair in this fresh process, its RSS figures as JSON.
async function rssChild(threads) {
  const a = await gocor.loadImage(A);
  const b = await gocor.loadImage(B);
  const before = process.memoryUsage().rss;
  const t = process.hrtime.bigint();
  const r = await gocor.match(a, b, matchOptions(threads));
  const wall = Number(process.hrtime.bigint() - t) / 1e6;
  process.stdout.write(
    JSON.stringify({
      width: a.width,
      height: a.height,
      threads,
      wall_ms: wall,
      rss_before_mb: before / 1048576,
      peak_rss_mb: process.resourceUsage().maxRSS / 1024,
      stages: r.timings,
    }),
  );
}

function rss(threads) {
  const p = spawnSync(
    process.execPath,
    [__filename, '--rss-child', String(threads), '--quality', quality, '--options', JSON.stringify(extra)],
    {
      encoding: 'utf8',
    },
  );
  if (p.status !== 0) throw new Error(`RSS child failed: ${p.stderr}`);
  return JSON.parse(p.stdout);
}

const fmtStages = (s) =>
  Object.entries(s)
    .map(([k, v]) => `${k} ${v.toFixed(0)}`)
    .join(', ');

async function main() {
  if (process.argv.includes('--rss-child')) return rssChild(Number(arg('--rss-child', 1)));
  const a = await gocor.loadImage(A);
  const b = await gocor.loadImage(B);
  const ca = crop(a, 300, 300, 512, 512);
  const cb = crop(b, 300, 300, 512, 512);
  const { one, two, rounds } = await timeMatch(ca, cb);
  const rsses = withRss ? [rss(1), rss(2)] : [];
  const result = {
    quality,
    options: extra,
    reps,
    pair512: {
      one,
      two,
      scaling: one.wall_ms / two.wall_ms,
      rounds,
      machine_scaling: median(rounds.map((r) => r.machine)),
    },
    ...(withRss ? { aloe: { one: rsses[0], two: rsses[1] } } : {}),
  };
  if (asJson) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  console.log(
    `match, quality '${quality}'${Object.keys(extra).length ? ` + ${JSON.stringify(extra)}` : ''}, 512x512 crop of aloe, ${reps} rounds: CPU median, wall and stages of the best call`,
  );
  console.log(
    `  1 thread : ${one.cpu_ms.toFixed(0)} ms CPU, ${one.wall_ms.toFixed(0)} ms wall (${fmtStages(one.stages)}; outside the stages ${one.outside_ms.toFixed(1)})`,
  );
  console.log(
    `  2 threads: ${two.cpu_ms.toFixed(0)} ms CPU, ${two.wall_ms.toFixed(0)} ms wall (${fmtStages(two.stages)}; outside the stages ${two.outside_ms.toFixed(1)})`,
  );
  console.log(`  speed-up 1 -> 2 threads (best wall): ${result.pair512.scaling.toFixed(2)}x`);
  console.log(
    `  the machine's own two-thread scaling in the same rounds (median ${result.pair512.machine_scaling.toFixed(2)}x); per round, match speed-up / machine: ${rounds.map((r) => `${r.speedup.toFixed(2)}/${r.machine.toFixed(2)}`).join(', ')}`,
  );
  for (const r of rsses) {
    console.log(
      `aloe ${r.width}x${r.height}, ${r.threads} thread(s): peak RSS ${r.peak_rss_mb.toFixed(0)} MB ` +
        `(${r.rss_before_mb.toFixed(0)} MB before match), ${r.wall_ms.toFixed(0)} ms wall (${fmtStages(r.stages)})`,
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
