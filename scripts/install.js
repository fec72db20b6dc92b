#!/usr/bin/env node
// Builds the native addon from source: `npx gocor-build` in a project that installed gocor (which
// otherwise loads the prebuilt @gocor/<platform>-<arch> package and has no install script), and,
// with --pretest, the first step of this repository's `npm test`.
// CMake (cmake-js) is the main build and compiles the CUDA backend when nvcc is found
// (GOCOR_CUDA=AUTO|ON|OFF). Where CMake or cmake-js is missing, or with GOCOR_BUILD=gyp, the
// CPU-only variant is built with node-gyp from binding.gyp (npm ships node-gyp).
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const log = (msg) => console.error(`gocor: ${msg}`);

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: process.env });
  if (r.error) return { ok: false, error: r.error };
  return { ok: r.status === 0, status: r.status };
}

function jobs() {
  return process.env.GOCOR_JOBS || String(Math.max(1, require('node:os').availableParallelism?.() ?? 2));
}

function hasCmake() {
  const r = spawnSync('cmake', ['--version'], { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

// cmake-js is a development dependency: present in this repository, absent in a consumer's
// node_modules unless installed (`npm install --no-save cmake-js`).
function cmakeJsPath() {
  try {
    return require.resolve('cmake-js/bin/cmake-js', { paths: [root, process.cwd()] });
  } catch {
    return undefined;
  }
}

function buildCmake(cmakeJs) {
  const args = [cmakeJs, 'compile', '--out', 'build'];
  if (process.env.GOCOR_CUDA) args.push(`--CDGOCOR_CUDA=${process.env.GOCOR_CUDA}`);
  args.push('--parallel', jobs());
  return run(process.execPath, args);
}

function buildGyp() {
  // npm exports the path of its bundled node-gyp to install scripts; outside npm, look beside node.
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(
      path.dirname(process.execPath),
      '..',
      'lib',
      'node_modules',
      'npm',
      'node_modules',
      'node-gyp',
      'bin',
      'node-gyp.js',
    ),
  ];
  const gyp = candidates.find((p) => p && fs.existsSync(p));
  const args = ['rebuild', `--jobs=${jobs()}`];
  // Build against this node's own headers when they are installed (no header download).
  const nodedir = process.env.npm_config_nodedir || path.join(path.dirname(process.execPath), '..');
  if (fs.existsSync(path.join(nodedir, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${nodedir}`);
  if (gyp) return run(process.execPath, [gyp, ...args]);
  return run('node-gyp', args);
}

// `npm test` builds first (this repository's fresh clone: `npm install` then `npm test`; gocor has
// no install or prepare script, which npm's --strict-allow-scripts would refuse in consumers). An
// existing node-gyp build (build/config.gypi) is kept as it is; a cmake-js build is brought up to date.
if (process.argv.includes('--pretest') && fs.existsSync(path.join(root, 'build', 'config.gypi'))) process.exit(0);

const mode = (process.env.GOCOR_BUILD || 'auto').toLowerCase();
const cmakeJs = cmakeJsPath();
let result;
if (mode === 'gyp') {
  log('building the CPU-only addon with node-gyp (GOCOR_BUILD=gyp)');
  result = buildGyp();
} else if (hasCmake() && cmakeJs) {
  result = buildCmake(cmakeJs);
} else if (mode === 'cmake') {
  log(
    `GOCOR_BUILD=cmake but ${cmakeJs ? 'cmake was not found on PATH' : 'cmake-js is not installed (npm install --no-save cmake-js)'}`,
  );
  process.exit(1);
} else {
  log(
    `${cmakeJs ? 'cmake not found' : 'cmake-js not installed'}: building the CPU-only addon with node-gyp (for the CUDA backend: cmake, nvcc and \`npm install --no-save cmake-js\`, then npx gocor-build)`,
  );
  result = buildGyp();
}
if (!result.ok) {
  log(`native build failed${result.error ? `: ${result.error.message}` : ''}`);
  process.exit(1);
}
