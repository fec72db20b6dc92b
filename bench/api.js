#!/usr/bin/env node
// `npm run bench:api`: issue 16's CPU targets measured through the public API, each as a ratio
// against its reference in the same run (one thread everywhere):
//   1. correlate() global vs numpy/OpenBLAS `a.T @ b` (fresh output, as the API returns one): each
//      volume disposed at once (gocor.dispose), as the reference frees its output with `del out`,
//      and, in the same rounds, left to V8's collector;
//   2. GlobalGOCor 16x16, C = 512, K = 3 vs a plain PyTorch implementation of the spec's global
//      module (bench/gocor_torch.py) and vs the official module's 136 ms (issue 16, this machine);
//   3. LocalGOCor K = 3 vs plain local correlate() at 109x256, C = 32 and 96.
// Times are medians of repeated calls. Needs the built addon (npm run build) and, for the
// references, Debian's python3-numpy and python3-torch (/usr/bin/python3). Where the CPU has AMX
// tiles (gemm_amx.cpp), target 2 also runs in a child process with GOCOR_SIMD=avx512 (the AVX-512
// micro-kernel only), alternating with the parent's rounds, as a second reference.
//   node bench/api.js [--quick] [--json] [--only 1|2|3] [--gocor-only]
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const gocor = require('..');
const { mulberry32 } = require('./synthetic');

const quick = process.argv.includes('--quick');
const asJson = process.argv.includes('--json');
const onlyArg = process.argv.indexOf('--only');
const only = onlyArg > 0 ? Number(process.argv[onlyArg + 1]) : undefined;
const runs = (target) => only === undefined || only === target;
// Only gocor's own timings, no reference (the AVX-512 child of target 2).
const gocorOnly = process.argv.includes('--gocor-only');
const OFFICIAL_MS = 136; // the official PyTorch module, 16x16x512, K = 3, one thread (issue 16)

function features(C, H, W, seed) {
  const r = mulberry32(seed);
  const data = new Float32Array(C * H * W);
  for (let i = 0; i < data.length; i++) data[i] = r() * 2 - 1;
  return { data, channels: C, height: H, width: W };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/**
 * Median time (ms) of `fn` over `reps` calls after `warm` warm-up calls: the process's CPU time
 * (user + system, so page faults count) — one thread computes, and on a shared machine CPU time is
 * far steadier than wall time — and the wall time beside it.
 */
async function time(fn, reps, warm = 2) {
  for (let i = 0; i < warm; i++) await fn();
  const cpu = [];
  const wall = [];
  for (let i = 0; i < reps; i++) {
    const c = process.cpuUsage();
    const t = process.hrtime.bigint();
    await fn();
    wall.push(Number(process.hrtime.bigint() - t) / 1e6);
    const d = process.cpuUsage(c);
    cpu.push((d.user + d.system) / 1e3);
  }
  return { ms: median(cpu), wall_ms: median(wall) };
}

function python(script, args) {
  const env = { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1', MKL_NUM_THREADS: '1' };
  delete env.OPENBLAS_CORETYPE;
  delete env.OPENBLAS_L2_SIZE;
  const core = { avx512: 'SkylakeX', avx2: 'Haswell' }[gocor.backends().cpu.simd];
  if (core) env.GOCOR_OPENBLAS_CORETYPE = core;
  const r = spawnSync('/usr/bin/python3', [path.join(__dirname, script), ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) {
    process.stderr.write(`${script} failed: ${r.stderr || r.error}\n`);
    return undefined;
  }
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

/** Medians over `rounds` alternating rounds of gocor and its reference (both sides see the same load). */
async function rounds(n, ours, theirs) {
  const a = [];
  const b = [];
  for (let i = 0; i < n; i++) {
    a.push(await ours());
    const r = await theirs();
    if (r) b.push(r);
  }
  const pick = (xs, key) => (xs.length ? median(xs.map((x) => x[key])) : undefined);
  // gocor's timings (ms, wall_ms and any others its rounds return) and the reference's.
  const mine = Object.fromEntries(Object.keys(a[0] ?? {}).map((k) => [k, pick(a, k)]));
  return { ...mine, ref_ms: pick(b, 'ms'), ref_wall_ms: pick(b, 'wall_ms') };
}

let standIn; // the stand-in's largest difference from gocor's volume (target 2)

async function main() {
  const reps = quick ? 5 : 15;
  const nrounds = quick ? 1 : 3;
  const rows = [];
  // 1. Global correlation: (positions, channels), square grids.
  for (const [P, C] of runs(1)
    ? [
        [1024, 256],
        [4096, 64],
        [4096, 256],
      ]
    : []) {
    const side = Math.round(Math.sqrt(P));
    const a = features(C, side, side, 1);
    const b = features(C, side, side, 2);
    // Each volume disposed as soon as it is returned, as the reference's `del out` frees its
    // output; and, in the same rounds, left to V8's collector (whose passes the CPU time counts).
    const disposed = async () => gocor.dispose(await gocor.correlate(a, b, { threads: 1 }));
    const collected = () => gocor.correlate(a, b, { threads: 1 });
    const t = await rounds(
      nrounds,
      async () => {
        const d = await time(disposed, reps);
        const g = await time(collected, reps);
        return { ...d, gc_ms: g.ms, gc_wall_ms: g.wall_ms };
      },
      () => python('corr_openblas.py', ['--fresh', String(P), String(C), String(reps)]),
    );
    const ref = 'numpy/OpenBLAS `a.T @ b`';
    rows.push({ target: 1, what: `correlate() global ${P}×${C}, disposed`, ref, ...t, faster: true });
    rows.push({
      target: 1,
      what: `correlate() global ${P}×${C}, left to the collector`,
      ref,
      ...t,
      ms: t.gc_ms,
      wall_ms: t.gc_wall_ms,
      faster: true,
    });
  }
  // 2. Global GOCor at GLU-Net's size.
  if (runs(2)) {
    const [H, W, C] = [16, 16, 512];
    const a = gocor.l2normalize(features(C, H, W, 3));
    const b = gocor.l2normalize(features(C, H, W, 4));
    const g = new gocor.GlobalGOCor({ numIter: 3, threads: 1 });
    if (gocorOnly) {
      const t = await time(() => g.correlate(a, b), reps * 2);
      console.log(JSON.stringify(t));
      return;
    }
    // Against the official module's fixed 136 ms nothing needs alternating: gocor's own rounds, run
    // back to back, time it as a service calling it steadily sees it. In the rounds alternated with
    // the PyTorch child, each round starts in caches and predictors the child has just evicted
    // (gocor's median ~10 % higher there); both are reported.
    const alone = await rounds(
      nrounds,
      () => time(() => g.correlate(a, b), reps * 2),
      async () => undefined,
    );
    const t = await rounds(
      nrounds,
      () => time(() => g.correlate(a, b), reps * 2),
      () => python('gocor_torch.py', [String(H), String(W), String(C), '3', String(reps)]),
    );
    const what = 'GlobalGOCor 16×16, C=512, K=3';
    rows.push({ target: 2, what, ref: 'PyTorch stand-in (bench/gocor_torch.py)', ...t, faster: true });
    if (gocor.backends().cpu.amx) {
      // The same call without AMX (GOCOR_SIMD=avx512 is read once per process: a child).
      const child = () => {
        const r = spawnSync(
          process.execPath,
          [__filename, '--only', '2', '--gocor-only', ...(quick ? ['--quick'] : [])],
          {
            env: { ...process.env, GOCOR_SIMD: 'avx512' },
            encoding: 'utf8',
          },
        );
        return r.status === 0 ? JSON.parse(r.stdout.trim().split('\n').pop()) : undefined;
      };
      const u = await rounds(nrounds, () => time(() => g.correlate(a, b), reps * 2), child);
      rows.push({ target: 2, what, ref: 'the same, AVX-512 without AMX (GOCOR_SIMD=avx512)', ...u, faster: true });
    }
    // The stand-in computes the same volume: run it on gocor's inputs and (default) parameters.
    // After the timed rounds: its garbage (arrays of 10^5 numbers as JSON) would otherwise be
    // collected by V8's background threads during the timed calls, whose CPU time the process's
    // usage counts (gocor's medians were ~50 % higher in the rounds right after it).
    const params = gocor.defaultGlobalParams(C, 0);
    const out = await new gocor.GlobalGOCor({ numIter: 3, threads: 1, params }).correlate(a, b);
    const file = path.join(os.tmpdir(), `gocor-api-check-${process.pid}.json`);
    const arrays = (o) =>
      Object.fromEntries(Object.entries(o).map(([k, v]) => [k, ArrayBuffer.isView(v) ? Array.from(v) : v]));
    fs.writeFileSync(
      file,
      JSON.stringify({
        H,
        W,
        C,
        K: 3,
        params: arrays(params),
        reference: Array.from(a.data),
        query: Array.from(b.data),
        volume: Array.from(out.data),
      }),
    );
    standIn = python('gocor_torch.py', ['--check', file]);
    fs.rmSync(file, { force: true });
    for (const [timing, when] of [
      [alone, 'gocor rounds back to back'],
      [t, 'gocor rounds alternated with the stand-in'],
    ]) {
      rows.push({
        target: 2,
        what,
        ref: `official module, 136 ms (issue 16); ${when}`,
        ...timing,
        ref_ms: OFFICIAL_MS,
        ref_wall_ms: undefined,
        faster: true,
      });
    }
  }
  // 3. Local GOCor against plain local correlation.
  for (const C of runs(3) ? [32, 96] : []) {
    const [H, W] = [109, 256];
    const a = features(C, H, W, 5);
    const b = features(C, H, W, 6);
    const l = new gocor.LocalGOCor({ numIter: 3, threads: 1 });
    const t = await rounds(
      nrounds,
      () => time(() => l.correlate(a, b), reps),
      () => time(() => gocor.correlate(a, b, { mode: 'local', searchRadius: 4, threads: 1 }), reps),
    );
    rows.push({
      target: 3,
      what: `LocalGOCor K=3, ${H}×${W}, C=${C}`,
      ref: 'correlate() local, R=4',
      ...t,
      faster: false,
    });
  }
  for (const r of rows) {
    r.ratio = r.ref_ms === undefined ? undefined : r.faster ? r.ref_ms / r.ms : r.ms / r.ref_ms;
    r.wall_ratio =
      r.ref_wall_ms === undefined ? undefined : r.faster ? r.ref_wall_ms / r.wall_ms : r.wall_ms / r.ref_wall_ms;
  }
  const cpu = (os.cpus()[0] || { model: 'unknown' }).model.trim();
  const header = `Machine: ${cpu}, ${os.cpus().length} threads, Node ${process.version}, SIMD ${gocor.backends().cpu.simd}; ${new Date().toISOString().slice(0, 16)}Z; one thread; medians of ${reps} calls × ${nrounds} alternating rounds`;
  if (asJson) {
    console.log(JSON.stringify({ machine: header, rows, standIn }, null, 1));
    return;
  }
  const f = (x) => (x === undefined ? '–' : x.toFixed(2));
  const lines = [
    header,
    '',
    '| target | gocor | CPU ms | reference | ref CPU ms | ratio (CPU) | ratio (wall) |',
    '|---|---|---|---|---|---|---|',
  ];
  for (const r of rows) {
    const unit = r.faster ? 'reference ÷ gocor' : 'gocor ÷ reference';
    const ratio = (x) => (x === undefined ? '–' : `${x.toFixed(2)} (${unit})`);
    lines.push(
      `| ${r.target} | ${r.what} | ${f(r.ms)} | ${r.ref} | ${f(r.ref_ms)} | ${ratio(r.ratio)} | ${ratio(r.wall_ratio)} |`,
    );
  }
  if (standIn) {
    lines.push(
      '',
      `PyTorch stand-in vs gocor's volume on the same inputs and parameters: max |difference| ${standIn.max_abs_diff.toExponential(2)} (max |value| ${standIn.max_abs.toFixed(3)}).`,
    );
  }
  console.log(lines.join('\n'));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
