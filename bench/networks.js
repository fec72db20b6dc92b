#!/usr/bin/env node
// Forward time of the official networks at 384x576 on one CPU thread, against the official PyTorch
// CPU forward times quoted in issue 15 (measured by the issue's author on this machine; PyTorch is
// not installed here, so they cannot be re-measured in the same run). Weights: random with the
// official fan-in scaling (speed does not depend on their values); GOCor modules: the official
// initial values. Reports the best of the runs (after a warm-up) of the wall time and of the
// process CPU time per forward (with one thread the CPU time is the forward's own, robust to other
// load on a shared machine).
//   node bench/networks.js [--runs N] [--models PWCNet,GLUNet_GOCor] [--threads T] [--memory]
// --memory: instead of timing, one fresh process per network reports the process's peak RSS growth
// from before loadNetwork to after one forward, against the network's weights (float32 bytes) and
// issue 15's bound (3x the weights + the largest level's activations, largestLevelBytes).
// --forwards N (with --memory): N forwards in turn instead of one; each may land on another of
// libuv's threads, so the peak is the steady state of a service, not only the first call's.
'use strict';
const os = require('node:os');
const path = require('node:path');
const dist = path.join(__dirname, '..', 'dist');
const { loadNetwork, networkTensors, defaultGlobalParams, defaultLocalParams } = require(dist);
const { paramsToTensors } = require(path.join(dist, 'params'));

const arg = (name, fallback) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
};
const runs = Number(arg('runs', '3'));
const threads = Number(arg('threads', '1'));
const forwards = Number(arg('forwards', '1'));
const models = arg('models', 'PWCNet,PWCNet_GOCor,GLUNet,GLUNet_GOCor').split(',');
// Issue 15: the official PyTorch CPU forward at 384x576, one thread, seconds.
const PYTORCH_S = { PWCNet: 0.95, PWCNet_GOCor: 1.18, GLUNet: 3.7, GLUNet_GOCor: 5.0 };
const H = 384;
const W = 576;

function lcg(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1; // [-1, 1)
  };
}

function weights(model) {
  const rnd = lcg(12345);
  const rec = {};
  for (const { name, shape } of networkTensors(model)) {
    if (name.endsWith('num_batches_tracked')) continue;
    const n = shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const b = shape.length === 4 ? Math.sqrt(6 / (shape[1] * shape[2] * shape[3])) : 0;
    const base = name.endsWith('running_var') || (shape.length === 1 && name.endsWith('.weight')) ? 1 : 0;
    for (let i = 0; i < n; i++) data[i] = shape.length === 4 ? b * rnd() : base + 0.1 * rnd();
    rec[name] = { shape, data };
  }
  if (model === 'PWCNet_GOCor') {
    const levels = {};
    for (const l of ['2', '3', '4', '5', '6']) levels[l] = defaultLocalParams();
    Object.assign(rec, paramsToTensors({ localLevels: levels }));
  } else if (model === 'GLUNet_GOCor') {
    Object.assign(
      rec,
      paramsToTensors({ global: defaultGlobalParams(512), local: defaultLocalParams(), localLevels: {} }),
    );
  }
  return rec;
}

function image(shape, seed) {
  const rnd = lcg(seed);
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = 0.5 + 0.5 * rnd();
  return { data, shape };
}

function inputsFor(model) {
  return model.startsWith('GLU')
    ? {
        target: image([1, 3, H, W], 1),
        source: image([1, 3, H, W], 2),
        target256: image([1, 3, 256, 256], 3),
        source256: image([1, 3, 256, 256], 4),
      }
    : { reference: image([1, 3, H, W], 1), query: image([1, 3, H, W], 2) };
}

const MB = 1024 * 1024;

/**
 * Issue 15's memory allowance beyond 3x the weights: "the largest level's activations", i.e. the
 * most activation bytes one level must hold at once in a layer-by-layer forward at H x W, batch 1:
 * the largest input + output of one layer (spec networks.md's shapes). A dense decoder's
 * convolutions write into its input x (the concatenation), so x counts once, with the 2-channel
 * prediction or the context / refinement network's first 128-channel output read from it.
 * PWC-Net: level l at H/2^l; pyramid convs (3 -> 16 stride 2, then 16 -> 16, ...), decoders x =
 * 448 + od channels, the context network at level 2. GLU-Net: VGG-16 (its level 0 and 1 convs at
 * full resolution, level 2 at 1/2, level 3 at 1/4), decoders at 1/4 (x = 533 + l_dc_conv's 128)
 * and 1/8 (x = 531), the 256 stream and the 16 x 16 level far smaller.
 */
function largestLevelBytes(model, h, w) {
  const at = (l) => (h >> l) * (w >> l); // pixels at level l (1/2^l)
  const layers = []; // [channels held, level]
  if (model.startsWith('PWC')) {
    const chans = [3, 16, 32, 64, 96, 128, 196];
    const od = [0, 0, 117, 149, 181, 213, 81];
    for (let l = 1; l <= 6; l++) {
      layers.push([chans[l - 1] * (at(l - 1) / at(l)) + chans[l], l]); // first (stride 2) conv
      layers.push([2 * chans[l], l]);
    }
    for (let l = 2; l <= 6; l++) layers.push([448 + od[l] + (l === 2 ? 128 : 2), l]);
  } else {
    const vgg = [
      [3, 64, 0],
      [64, 64, 0],
      [64, 128, 1],
      [128, 128, 1],
      [128, 256, 2],
      [256, 256, 2],
    ];
    for (const [i, o, l] of vgg) layers.push([i + o, l]);
    layers.push([533 + 128, 2], [531 + 2, 3]);
  }
  return 4 * Math.max(...layers.map(([c, l]) => c * at(l)));
}

/** In this process: peak RSS growth over loadNetwork + `forwards` forwards (run by --memory-child). */
async function memoryChild(model) {
  const rec = weights(model);
  const inputs = inputsFor(model);
  let weightBytes = 0;
  for (const t of Object.values(rec)) weightBytes += t.data.byteLength;
  const before = process.memoryUsage().rss;
  const net = await loadNetwork(rec, { model, threads });
  const loaded = process.memoryUsage().rss;
  for (let i = 0; i < forwards; i++) await net.forward(inputs);
  const peak = process.resourceUsage().maxRSS * 1024;
  console.log(JSON.stringify({ model, weightBytes, retained: net.retainedBytes, before, loaded, peak }));
}

/** One fresh process per network, so that each peak is its own. */
function memory() {
  const { execFileSync } = require('node:child_process');
  console.log(
    `\n| network (384x576, ${threads} thread${threads > 1 ? 's' : ''}) | weights (MB) | retained by the network (MB) | RSS growth after load (MB) | peak RSS growth, load + ${forwards > 1 ? `${forwards} forwards` : 'forward'} (MB) | peak ÷ weights | largest level's activations (MB) | bound: 3x weights + activations (MB) | peak ÷ bound |`,
  );
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const model of models) {
    const out = execFileSync(
      process.execPath,
      [__filename, '--memory-child', model, '--threads', String(threads), '--forwards', String(forwards)],
      {
        encoding: 'utf8',
      },
    );
    const r = JSON.parse(out.trim().split('\n').pop());
    const grow = r.peak - r.before;
    const act = largestLevelBytes(model, H, W);
    const bound = 3 * r.weightBytes + act;
    const mb = (x) => (x / MB).toFixed(1);
    console.log(
      `| ${model} | ${mb(r.weightBytes)} | ${mb(r.retained)} | ${mb(r.loaded - r.before)} | ${mb(grow)} | ${(grow / r.weightBytes).toFixed(2)} | ${mb(act)} | ${mb(bound)} | ${(grow / bound).toFixed(2)} |`,
    );
  }
}

async function main() {
  if (process.argv.includes('--memory-child')) return memoryChild(arg('memory-child'));
  if (process.argv.includes('--memory')) return memory();
  const rows = [];
  for (const model of models) {
    const net = await loadNetwork(weights(model), { model, threads });
    const inputs = inputsFor(model);
    await net.forward(inputs); // warm-up
    const wall = [];
    const cpu = [];
    for (let r = 0; r < runs; r++) {
      const c0 = process.cpuUsage();
      const t0 = process.hrtime.bigint();
      await net.forward(inputs);
      wall.push(Number(process.hrtime.bigint() - t0) / 1e9);
      const c = process.cpuUsage(c0);
      cpu.push((c.user + c.system) / 1e6);
    }
    // Best of the runs, as the other CPU benchmarks (bench/README.md), and the spread (on a shared
    // machine a thread's CPU time grows with the load on the sibling hyperthread).
    const sorted = [...cpu].sort((a, b) => a - b);
    const row = {
      model,
      wall_s: Math.min(...wall),
      cpu_s: sorted[0],
      cpu_median_s: sorted[Math.floor(sorted.length / 2)],
      cpu_max_s: sorted[sorted.length - 1],
      pytorch_s: PYTORCH_S[model],
      load: os.loadavg()[0],
    };
    row.ratio = row.cpu_s / row.pytorch_s;
    rows.push(row);
    console.error(JSON.stringify(row));
  }
  console.log(
    `\n| network (384x576, ${threads} thread${threads > 1 ? 's' : ''}) | gocor wall (s) | gocor CPU (s) | CPU median / max (s) | PyTorch CPU (s, issue 15) | gocor / PyTorch | load |`,
  );
  console.log('|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.model} | ${r.wall_s.toFixed(2)} | ${r.cpu_s.toFixed(2)} | ${r.cpu_median_s.toFixed(2)} / ${r.cpu_max_s.toFixed(2)} | ${r.pytorch_s.toFixed(2)} | ${r.ratio.toFixed(2)} | ${r.load.toFixed(1)} |`,
    );
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
