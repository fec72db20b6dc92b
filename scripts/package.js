#!/usr/bin/env node
// `npm run package`: writes every installable tarball this machine can build into pack/: the
// platform package @gocor/<platform>-<arch> (the addon built by cmake-js in Release: CPU dispatch,
// CUDA linked statically when nvcc is found; GOCOR_CUDA=AUTO|ON|OFF as for any build) and gocor.
// gocor's tarball lists every platform package of npm/ as an optional dependency. The repository's
// package.json does not: until they are published, npm could not resolve them, and `npm ci` refuses
// a lockfile without them; so gocor is packed from a staged copy with them added.
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

// 3. The tarballs. gocor: the TypeScript compiled, the files `npm pack` would take staged with the
// optional dependencies added, packed without scripts.
fs.mkdirSync(pack, { recursive: true });
for (const f of fs.readdirSync(pack)) if (f.endsWith('.tgz')) fs.rmSync(path.join(pack, f));
run(process.execPath, [path.join(root, 'scripts', 'build-ts.js')], root);
const stage = path.join(pack, '.stage');
fs.rmSync(stage, { recursive: true, force: true });
const [listing] = JSON.parse(run('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], root));
for (const { path: file } of listing.files) {
  fs.mkdirSync(path.dirname(path.join(stage, file)), { recursive: true });
  fs.copyFileSync(path.join(root, file), path.join(stage, file));
}
const platforms = fs
  .readdirSync(path.join(root, 'npm'))
  .filter((d) => fs.existsSync(path.join(root, 'npm', d, 'package.json')));
const staged = { ...pkg, optionalDependencies: Object.fromEntries(platforms.map((p) => [`@gocor/${p}`, pkg.version])) };
delete staged.scripts;
delete staged.devDependencies;
fs.writeFileSync(path.join(stage, 'package.json'), `${JSON.stringify(staged, null, 2)}\n`);
const files = [
  run('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', pack], dir),
  run('npm', ['pack', '--silent', '--ignore-scripts', '--pack-destination', pack], stage),
].map((out) => out.trim().split('\n').pop());
fs.rmSync(stage, { recursive: true, force: true });
for (const f of files) {
  const size = (fs.statSync(path.join(pack, f)).size / 1024 / 1024).toFixed(1);
  console.log(`pack/${f} (${size} MB)`);
}
console.log(
  `${name}: CPU dispatch up to ${info.simd} here, CUDA backend ${info.cuda ? 'compiled in (runtime linked statically)' : 'not compiled in'}`,
);
