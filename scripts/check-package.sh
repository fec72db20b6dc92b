#!/usr/bin/env bash
# Proves the package works as a dependency: npm pack, install the tarball into an empty project
# (from npm's cache where it can: --prefer-offline, since `npm ci` from a lockfile caches the
# tarballs but not the registry metadata a fresh install resolves ranges with), then import it as
# ESM and CJS and type-check a TypeScript consumer against the shipped .d.ts.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cd "$repo"
tarball="$(npm pack --silent --pack-destination "$work" | tail -n 1)"
echo "packed $tarball ($(du -h "$work/$tarball" | cut -f1))"

mkdir "$work/app" && cd "$work/app"
npm init -y >/dev/null
# The consumer's build is CPU-only to keep this check short; the CUDA build is checked separately.
GOCOR_CUDA=OFF npm install --prefer-offline --no-audit --no-fund "$work/$tarball" >/dev/null

cat > esm.mjs <<'JS'
import { correlate, loadImage, backends, GocorError } from 'gocor';
import gocor from 'gocor';
const img = await loadImage(process.argv[2], { gray: true, resize: { width: 8, height: 8 } });
const fm = { data: img.data, channels: 1, height: 8, width: 8 };
const v = await correlate(fm, fm);
if (v.shape.join() !== '1,64,8,8') throw new Error(`bad shape ${v.shape}`);
if (typeof gocor.correlate !== 'function' || !(new GocorError('ERR_GOCOR_SHAPE', 'x') instanceof Error)) throw new Error('bad default export');
console.log(`esm ok: simd=${backends().cpu.simd} cuda.compiled=${backends().cuda.compiled}`);
JS
cat > cjs.cjs <<'JS'
const { correlate, LocalGOCor } = require('gocor');
const data = new Float32Array(4 * 5 * 6).map((_, i) => Math.sin(i));
const fm = { data, channels: 4, height: 5, width: 6 };
Promise.all([correlate(fm, fm, { mode: 'local' }), new LocalGOCor().correlate(fm, fm)]).then(([a, b]) => {
  if (a.shape.join() !== '1,81,5,6' || b.shape.join() !== '1,81,5,6') throw new Error('bad shapes');
  console.log('cjs ok');
});
JS
cat > consumer.ts <<'TS'
import { type FeatureMap, type Volume, correlate, GlobalGOCor } from 'gocor';
const fm: FeatureMap = { data: new Float32Array(8), channels: 2, height: 2, width: 2 };
const v: Promise<Volume> = correlate(fm, fm, { mode: 'global', device: 'cpu' });
const g = new GlobalGOCor({ numIter: 3, applyQueryLoss: true });
void v;
void g;
TS
node esm.mjs "$repo/examples/astronaut.png"
node cjs.cjs
node "$repo/node_modules/typescript/bin/tsc" --noEmit --strict --module node16 --moduleResolution node16 --types node --typeRoots "$repo/node_modules/@types" consumer.ts
echo "types ok"
echo "package check passed"
