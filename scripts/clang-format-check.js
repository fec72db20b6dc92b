#!/usr/bin/env node
// Checks that every C++/CUDA source is clang-formatted (.clang-format), using the npm-shipped binary.
'use strict';
const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const fix = process.argv.includes('--fix');
const files = [];
for (const dir of ['cpp/core', 'cpp/napi', 'cuda', 'test/cpp', 'test/cpp/support']) {
  const abs = path.join(root, dir);
  if (!fs.existsSync(abs)) continue;
  for (const f of fs.readdirSync(abs)) if (/\.(cpp|h|cu|cuh|inc)$/.test(f)) files.push(path.join(dir, f));
}
const bin = require.resolve('clang-format/index.js', { paths: [root] });
const args = fix ? ['-i', ...files] : ['--dry-run', '--Werror', ...files];
const r = spawnSync(process.execPath, [bin, '--style=file', ...args], { cwd: root, stdio: 'inherit' });
if (r.status !== 0) {
  console.error('clang-format: sources are not formatted; run `node scripts/clang-format-check.js --fix`');
  process.exit(1);
}
console.log(`clang-format: ${files.length} files formatted`);
