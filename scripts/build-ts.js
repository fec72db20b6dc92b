#!/usr/bin/env node
// Compiles lib/ to dist/ (CommonJS + .d.ts) and writes the ESM entry dist/index.mjs, whose named
// exports are read off the compiled CommonJS module so that both stay in step.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const dist = path.join(root, 'dist');
if (!fs.existsSync(path.join(root, 'lib', 'index.ts'))) process.exit(0); // a packed copy: dist/ ships built
let tsc;
try {
  tsc = require.resolve('typescript/bin/tsc', { paths: [root] });
} catch {
  // Installed as a dependency from a tarball: dist/ ships prebuilt, nothing to do.
  if (fs.existsSync(path.join(dist, 'index.js'))) process.exit(0);
  console.error('gocor: TypeScript is not installed and dist/ is missing; run npm install in the repository');
  process.exit(1);
}
fs.rmSync(dist, { recursive: true, force: true });
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.json')], { stdio: 'inherit' });

// Named ESM exports: the keys the CommonJS build defines (values are not evaluated here).
const src = fs.readFileSync(path.join(dist, 'index.js'), 'utf8');
const names = new Set();
for (const m of src.matchAll(/exports\.([A-Za-z_$][\w$]*) = /g)) names.add(m[1]);
for (const m of src.matchAll(/Object\.defineProperty\(exports, "([A-Za-z_$][\w$]*)"/g)) names.add(m[1]);
names.delete('__esModule');
const list = [...names].sort();
const mjs = [
  "import { createRequire } from 'node:module';",
  'const require = createRequire(import.meta.url);',
  "const gocor = require('./index.js');",
  `export const { ${list.join(', ')} } = gocor;`,
  'export default gocor;',
  '',
].join('\n');
fs.writeFileSync(path.join(dist, 'index.mjs'), mjs);
fs.writeFileSync(
  path.join(dist, 'index.d.mts'),
  "export * from './index.js';\nimport gocor = require('./index.js');\nexport default gocor;\n",
);
const cli = path.join(dist, 'cli.js');
if (fs.existsSync(cli)) fs.chmodSync(cli, 0o755);
