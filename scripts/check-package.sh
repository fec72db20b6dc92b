#!/usr/bin/env bash
# Proves the package installs like sharp: `npm run package` writes gocor's tarball and the prebuilt
# platform package into pack/; a fresh consumer installs them with --strict-allow-scripts (no
# install script may run) from npm's cache where it can (--prefer-offline: `npm ci` from a lockfile
# caches the tarballs, not the registry metadata a fresh install resolves ranges with); nothing is
# compiled (no build folder, the addon comes from the platform package); then correlate, GOCor and
# match run from CommonJS and ESM, a strict TypeScript consumer type-checks against the shipped
# .d.ts, and the shipped example runs from node_modules/gocor/examples.
# GOCOR_PACK_REUSE=1 reuses pack/*.tgz instead of running `npm run package`.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
fail() { echo "check-package: $*" >&2; exit 1; }

cd "$repo"
if [ "${GOCOR_PACK_REUSE:-}" != 1 ]; then npm run -s package; fi
platform="$(node -p 'process.platform + "-" + process.arch')"
tarballs=("$repo"/pack/gocor-0*.tgz "$repo/pack/gocor-$platform-"*.tgz)
for t in "${tarballs[@]}"; do [ -f "$t" ] || fail "missing $t (npm run package)"; done

mkdir "$work/app" && cd "$work/app"
npm init -y >/dev/null
start=$SECONDS
npm install --strict-allow-scripts --prefer-offline --no-audit --no-fund --foreground-scripts "${tarballs[@]}" >install.log 2>&1 ||
  { cat install.log; fail "npm install --strict-allow-scripts failed"; }
echo "installed ${tarballs[*]##*/} in $((SECONDS - start)) s (--strict-allow-scripts)"
# Nothing compiled: no build output in gocor, no compiler run in the log, the addon from the platform package.
[ ! -e node_modules/gocor/build ] || fail "node_modules/gocor/build exists: something was compiled"
if grep -Eiq 'cmake|node-gyp|gyp info|g\+\+|nvcc' install.log; then cat install.log; fail "the install ran a build"; fi
loaded="$(NODE_DEBUG=gocor node -e "require('gocor').backends()" 2>&1 | grep 'native addon' || true)"
echo "$loaded" | grep -q "prebuilt .*node_modules/@gocor/$platform/gocor.node" || fail "addon not loaded from @gocor/$platform: $loaded"
echo "addon: ${loaded#*: }"

cat > esm.mjs <<'JS'
import { correlate, loadImage, backends, GocorError, GlobalGOCor, match } from 'gocor';
import gocor from 'gocor';
const img = await loadImage(process.argv[2], { gray: true, resize: { width: 8, height: 8 } });
const fm = { data: img.data, channels: 1, height: 8, width: 8 };
const v = await correlate(fm, fm);
if (v.shape.join() !== '1,64,8,8') throw new Error(`bad shape ${v.shape}`);
const g = await new GlobalGOCor().correlate(fm, fm);
if (g.shape.join() !== '1,64,8,8') throw new Error(`bad GOCor shape ${g.shape}`);
const f = await match(process.argv[2], process.argv[2]);
if (f.width !== 512 || !f.data.every((x) => Math.abs(x) < 0.01)) throw new Error('match of an image with itself is not ~0');
if (typeof gocor.correlate !== 'function' || !(new GocorError('ERR_GOCOR_SHAPE', 'x') instanceof Error)) throw new Error('bad default export');
console.log(`esm ok: simd=${backends().cpu.simd} cuda.compiled=${backends().cuda.compiled} cuda.available=${backends().cuda.available}`);
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
import { type FeatureMap, type Volume, correlate, GlobalGOCor, loadParams, readCheckpoint, type CheckpointTensor } from 'gocor';
const fm: FeatureMap = { data: new Float32Array(8), channels: 2, height: 2, width: 2 };
const v: Promise<Volume> = correlate(fm, fm, { mode: 'global', device: 'cpu' });
const g = new GlobalGOCor({ numIter: 3, applyQueryLoss: true });
const p = loadParams('model.pth').then((params) => new GlobalGOCor({ params }));
const t: Promise<Record<string, CheckpointTensor>> = readCheckpoint('model.pth');
void v;
void g;
void p;
void t;
TS
node esm.mjs "$repo/examples/astronaut.png"
node cjs.cjs
node "$repo/node_modules/typescript/bin/tsc" --noEmit --strict --module node16 --moduleResolution node16 --types node --typeRoots "$repo/node_modules/@types" consumer.ts
echo "types ok"
node node_modules/gocor/examples/match.js out >/dev/null
[ -s out/flow.png ] && [ -s out/flow.flo ] || fail "the shipped example wrote nothing"
echo "example ok: node node_modules/gocor/examples/match.js"
npx --no-install gocor --version >/dev/null || fail "the gocor command does not run"

# Without the platform package (and no local build) the first call names both and the build command.
rm -rf "node_modules/@gocor/$platform"
msg="$(node -e "try { require('gocor').backends() } catch (e) { console.log(e.code + ': ' + e.message) }")"
for want in ERR_GOCOR_NATIVE_LOAD "@gocor/$platform" "no usable local build" "npx gocor-build"; do
  [[ "$msg" == *"$want"* ]] || fail "load error without the platform package does not say '$want': $msg"
done
echo "without @gocor/$platform: ${msg:0:80}…"
# GOCOR_CHECK_BUILD=1: build from source in the consumer (node-gyp there, CPU only; ~1-2 min) and use it.
if [ "${GOCOR_CHECK_BUILD:-}" = 1 ]; then
  npx --no-install gocor-build >build.log 2>&1 || { tail -20 build.log; fail "npx gocor-build failed"; }
  NODE_DEBUG=gocor node -e "require('gocor').backends()" 2>&1 | grep -q "local build" || fail "the local build is not used"
  node cjs.cjs >/dev/null
  echo "npx gocor-build ok: $(node -p "require('gocor').buildInfo().buildSystem")"
fi
echo "package check passed"
