#!/usr/bin/env node
// Builds the C++ test programs (no Node involved in them) and runs each one. With --sanitize the
// core is built with AddressSanitizer and UndefinedBehaviorSanitizer (CPU only).
//   node scripts/test-cpp.js [--sanitize] [--cuda=AUTO|ON|OFF]
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const sanitize = process.argv.includes('--sanitize');
const cudaArg = process.argv.find((a) => a.startsWith('--cuda='));
const cuda = sanitize ? 'OFF' : cudaArg ? cudaArg.slice(7) : process.env.GOCOR_CUDA || 'AUTO';
const dir = path.join(root, sanitize ? 'build-asan' : 'build-test');
const jobs = String(Math.max(1, require('node:os').availableParallelism?.() ?? 2));

function run(cmd, args, env) {
  console.log(`$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.error) throw r.error;
  return r.status ?? 1;
}

const configure = [
  '-S',
  root,
  '-B',
  dir,
  '-DGOCOR_BUILD_TESTS=ON',
  `-DGOCOR_CUDA=${cuda}`,
  `-DCMAKE_BUILD_TYPE=${sanitize ? 'RelWithDebInfo' : 'Release'}`,
];
if (sanitize) configure.push('-DGOCOR_SANITIZE=address,undefined');
if (process.env.GOCOR_CUDA_ARCHITECTURES)
  configure.push(`-DGOCOR_CUDA_ARCHITECTURES=${process.env.GOCOR_CUDA_ARCHITECTURES}`);
if (run('cmake', configure) !== 0) process.exit(1);

// Test programs are test/cpp/*_main.cpp except the benchmarks.
const programs = fs
  .readdirSync(path.join(root, 'test', 'cpp'))
  .filter((f) => f.endsWith('_main.cpp') && !f.includes('bench'))
  .map((f) => f.replace(/_main\.cpp$/, ''));
if (run('cmake', ['--build', dir, '-j', jobs, '--target', ...programs]) !== 0) process.exit(1);

const env = {
  GOCOR_CONFORMANCE_DIR: process.env.GOCOR_CONFORMANCE_DIR || path.join(root, 'test', 'fixtures', 'conformance'),
  ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=1',
  UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1',
  // Under the sanitizers the largest grids only cost time: the same code paths run at smaller sizes.
  ...(sanitize ? { GOCOR_TEST_QUICK: '1' } : {}),
};
// Every program once, and the interpolation's banded paths (row bands of its Voronoi diagram and
// seed graph, one per pool thread) once more with a pool of 6 threads, so that more than two bands
// run on any machine.
const runs = [
  ...programs.map((p) => ({ name: p, program: p, env })),
  {
    name: 'interp_test (6 pool threads)',
    program: 'interp_test',
    env: { ...env, GOCOR_THREADS: '6', GOCOR_TEST_QUICK: '1' },
  },
];
let failed = 0;
for (const r of runs) {
  const status = run(path.join(dir, r.program), [], r.env);
  console.log(`${r.name}: ${status === 0 ? 'ok' : `FAILED (exit ${status})`}`);
  if (status !== 0) failed++;
}
console.log(`${runs.length - failed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
