#!/usr/bin/env node
// The main job on the shipped frames, runnable from an installed package:
//   node node_modules/gocor/examples/match.js [A.png B.png] [OUTDIR]
// writes OUTDIR/flow.flo and OUTDIR/flow.png (OUTDIR: ./gocor-example) and prints the timing.
'use strict';
const path = require('node:path');
const { match, flowToColor, writeFlo } = require('gocor');
const { writeFile, mkdir } = require('node:fs/promises');

async function main() {
  const [a, b] = process.argv.length >= 4 ? process.argv.slice(2, 4) : ['basketball1.png', 'basketball2.png'].map((f) => path.join(__dirname, f));
  const out = process.argv[process.argv.length >= 4 ? 4 : 2] ?? 'gocor-example';
  const t0 = performance.now();
  const flow = await match(a, b);
  const ms = performance.now() - t0;
  await mkdir(out, { recursive: true });
  await writeFlo(path.join(out, 'flow.flo'), flow);
  await writeFile(path.join(out, 'flow.png'), await flowToColor(flow));
  console.log(`${path.basename(a)} -> ${path.basename(b)}: ${flow.width}x${flow.height} flow on ${flow.device} in ${ms.toFixed(0)} ms; wrote ${out}/flow.flo, ${out}/flow.png`);
}

main().catch((err) => {
  console.error(`${err.code ?? 'error'}: ${err.message}`);
  process.exitCode = 1;
});
