#!/usr/bin/env node
// `npm run bench`: builds the C++ benchmark programs, runs them with the OpenBLAS comparison, and
// prints markdown tables (also written to bench/out/results.md and results.json).
//   node bench/run.js [--quick] [--only corr|gocor]
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const dir = path.join(root, 'build-bench');
const outDir = path.join(__dirname, 'out');
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const quick = process.argv.includes('--quick');

function sh(cmd, args, opts = {}) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 1 << 26, ...opts });
  if (r.error) throw r.error;
  if (r.status !== 0) {
    process.stderr.write(r.stdout || '');
    process.stderr.write(r.stderr || '');
    throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status}`);
  }
  return r.stdout;
}

function jsonLines(text) {
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l));
}

const programs = ['corr_bench', 'gocor_bench'].filter((p) => !only || p.startsWith(only));
console.error('building benchmark programs...');
sh('cmake', ['-S', root, '-B', dir, '-DGOCOR_BUILD_TESTS=ON', '-DGOCOR_CUDA=OFF', '-DCMAKE_BUILD_TYPE=Release']);
sh('cmake', ['--build', dir, '-j', String(os.availableParallelism?.() ?? 2), '--target', ...programs]);

const rows = [];
const env = { ...process.env, ...(quick ? { GOCOR_BENCH_QUICK: '1' } : {}) };
for (const p of programs) {
  console.error(`running ${p}...`);
  rows.push(...jsonLines(sh(path.join(dir, p), [], { env, stdio: ['ignore', 'pipe', 'inherit'] })));
}
if (!only || only === 'corr') {
  console.error('running OpenBLAS sgemm (numpy) on the same shapes...');
  // OpenBLAS picks its fastest kernel only without the workplace's conservative overrides.
  const pyEnv = { ...process.env, OPENBLAS_NUM_THREADS: '1', OMP_NUM_THREADS: '1' };
  delete pyEnv.OPENBLAS_CORETYPE;
  delete pyEnv.OPENBLAS_L2_SIZE;
  try {
    rows.push(...jsonLines(sh('python3', [path.join(__dirname, 'corr_openblas.py')], { env: pyEnv })));
  } catch (err) {
    console.error(`OpenBLAS comparison skipped: ${err.message}`);
  }
}

const cpu = (os.cpus()[0] || { model: 'unknown' }).model.trim();
const header = `Machine: ${cpu}, ${os.cpus().length} threads, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}; ${new Date().toISOString().slice(0, 10)}`;
const md = [header, ''];

/** A markdown section: `title`, then a table with `columns` and one row of `cells(item)` per item. */
function section(title, columns, items, cells) {
  if (!items.length) return;
  md.push(`### ${title}`, '', `| ${columns.join(' | ')} |`, `|${columns.map(() => '---').join('|')}|`);
  for (const item of items) md.push(`| ${cells(item).join(' | ')} |`);
  md.push('');
}

const fixed = (x, digits) => (x !== undefined ? x.toFixed(digits) : '–');
const blas = rows.filter((r) => r.op === 'openblas_sgemm' || r.op === 'sgemm_openblas');
section(
  'Plain global correlation vs OpenBLAS sgemm (same shapes, same run)',
  ['positions N=M', 'C', 'threads', 'gocor ms', 'gocor GFLOP/s', 'OpenBLAS GFLOP/s', 'ratio'],
  rows.filter((r) => r.op === 'corr_global'),
  (r) => {
    const b = blas.find((x) => x.N === r.N && x.C === r.C && (x.threads ?? 1) === r.threads);
    return [
      r.N,
      r.C,
      r.threads,
      r.ms.toFixed(3),
      r.gflops.toFixed(1),
      fixed(b?.gflops, 1),
      fixed(b && r.gflops / b.gflops, 2),
    ];
  },
);
section(
  'Plain local correlation (R = 4)',
  ['H×W', 'C', 'threads', 'ms', 'GFLOP/s'],
  rows.filter((r) => r.op === 'corr_local'),
  (r) => [`${r.H}×${r.W}`, r.C, r.threads, r.ms.toFixed(3), r.gflops.toFixed(1)],
);
section(
  'GOCor vs plain correlation',
  ['op', 'H×W', 'C', 'K', 'threads', 'GOCor ms', 'correlation ms', 'ratio', 'GFLOP/s performed'],
  rows.filter((r) => String(r.op).startsWith('gocor')),
  (r) => {
    const corrMs = r.corr_ms ?? r.plain_ms;
    const ratio = r.ratio ?? (corrMs ? r.ms / corrMs : undefined);
    return [
      r.op,
      `${r.H}×${r.W}`,
      r.C,
      r.K,
      r.threads,
      r.ms.toFixed(2),
      fixed(corrMs, 3),
      fixed(ratio, 1),
      fixed(r.gflops_performed ?? r.gflops, 1),
    ];
  },
);
const text = md.join('\n');
console.log(text);
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'results.md'), `${text}\n`);
fs.writeFileSync(path.join(outDir, 'results.json'), `${JSON.stringify({ machine: header, rows }, null, 1)}\n`);
