#!/usr/bin/env node
// `npm run package`: writes every installable tarball this machine can build into pack/: the
// platform package @gocor/<platform>-<arch> (the addon built by cmake-js in Release: CPU dispatch,
// CUDA linked statically when nvcc is found; GOCOR_CUDA=AUTO|ON|OFF as for any build) and gocor.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const pack = path.join(root, 'pack');
const pkg = require('../package.json');
const platform = `${process.platform}-${process.arch}`;
const name = `@gocor/${platform}`;
const dir = path.join(root, 'npm', platform);

function fail(msg) {
  console.error(`package: ${msg}`);
  process.exit(1);
}

function run(cmd, args, cwd) {
  const r = spawnSync(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' });
  if (r.error || r.status !== 0) fail(`${cmd} ${args.join(' ')} failed${r.error ? `: ${r.error.message}` : ''}`);
  return r.stdout;
}

const platformPkgFile = path.join(dir, 'package.json');
if (!fs.existsSync(platformPkgFile))
  fail(
    `no platform package folder npm/${platform} (prebuilt packages: ${fs
      .readdirSync(path.join(root, 'npm'))
      .filter((d) => !d.includes('.'))
      .join(', ')})`,
  );
if (pkg.optionalDependencies?.[name] !== pkg.version)
  fail(`package.json's optionalDependencies must list "${name}": "${pkg.version}"`);

// 1. The addon: Release, incremental in build/ (the same folder as `npm install`'s build).
const cmakeJs = require.resolve('cmake-js/bin/cmake-js', { paths: [root] });
const cuda = process.env.GOCOR_CUDA || 'AUTO';
process.stderr.write(`package: building the addon (cmake-js, Release, GOCOR_CUDA=${cuda})\n`);
run(process.execPath, [cmakeJs, 'compile', '--out', 'build', `--CDGOCOR_CUDA=${cuda}`], root);
const addon = path.join(root, 'build', 'Release', 'gocor.node');
const info = JSON.parse(
  run(
    process.execPath,
    [
      '-e',
      `const a=require(${JSON.stringify(addon)});console.log(JSON.stringify({build:a.buildInfo(),simd:a.backends().cpu.simd,cuda:a.backends().cuda.compiled}))`,
    ],
    root,
  ),
);
if (info.build.buildSystem !== 'cmake-js') fail(`expected a cmake-js build, got ${info.build.buildSystem}`);

// 2. The platform package folder: the addon, the licence, gocor's version.
fs.copyFileSync(addon, path.join(dir, 'gocor.node'));
fs.copyFileSync(path.join(root, 'LICENSE'), path.join(dir, 'LICENSE'));
const platformPkg = JSON.parse(fs.readFileSync(platformPkgFile, 'utf8'));
if (platformPkg.version !== pkg.version) {
  platformPkg.version = pkg.version;
  fs.writeFileSync(platformPkgFile, `${JSON.stringify(platformPkg, null, 2)}\n`);
}

// 3. The tarballs (gocor's own `prepare` compiles the TypeScript; it ships no build).
fs.mkdirSync(pack, { recursive: true });
for (const f of fs.readdirSync(pack)) if (f.endsWith('.tgz')) fs.rmSync(path.join(pack, f));
const files = [dir, root].map((cwd) =>
  run('npm', ['pack', '--silent', '--pack-destination', pack], cwd).trim().split('\n').pop(),
);
for (const f of files) {
  const size = (fs.statSync(path.join(pack, f)).size / 1024 / 1024).toFixed(1);
  console.log(`pack/${f} (${size} MB)`);
}
console.log(
  `${name}: CPU dispatch up to ${info.simd} here, CUDA backend ${info.cuda ? 'compiled in (runtime linked statically)' : 'not compiled in'}`,
);
