/**
 * `gocor report` over an OUTDIR whose result.json files were crafted: every field lands escaped in
 * the HTML, and no image outside OUTDIR is read unless the user named it (--list / --dir).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CLI, cliBuilt, runCli, tempDir, texture, writeShiftedPair } from '../cli/fixtures';

const tmp = tempDir('gocor-relreport-');
const out = path.join(tmp, 'out');
const secret = path.join(tmp, 'private', 'secret.png');
const inside = path.join(out, 'inputs', 'a.png');

function record(dir: string, rec: unknown): void {
  mkdirSync(path.join(out, dir), { recursive: true });
  writeFileSync(path.join(out, dir, 'result.json'), JSON.stringify(rec));
}

beforeAll(async () => {
  if (!cliBuilt()) throw new Error(`${CLI} is missing: run \`npm run build:ts\` before the tests`);
  mkdirSync(path.dirname(secret), { recursive: true });
  mkdirSync(path.dirname(inside), { recursive: true });
  await writeShiftedPair(texture(100, 100, 3), 100, 48, { dx: 1, dy: 1 }, secret, inside);
  symlinkSync(secret, path.join(out, 'inputs', 'link.png'));
  record('1-x', {
    status: 'ok',
    index: '<script>alert(1)</script>',
    a: { path: secret, width: '<em>w</em>', height: 48 },
    b: { path: path.join(out, 'inputs', 'link.png'), width: 48, height: 48 },
    method: '<u>m</u>',
    metrics: { aepe: '<img src=x onerror=alert(2)>', pck1: '"><b>bold</b>', pck3: 0.5, pck5: 0.9, validPixels: 1 },
    timings: { totalMs: '<i>t</i>' },
    files: { flowColor: '../../private/secret.png', warped: 'warped.png', flow: 'flow.flo' },
  });
  record('2-y', {
    status: 'ok',
    index: 2,
    a: { path: inside, width: 48, height: 48 },
    b: { path: inside, width: 48, height: 48 },
    method: 'gocor',
    metrics: { aepe: 1.25, pck1: 0.5, pck3: 0.75, pck5: 1, validPixels: 2304 },
    timings: { totalMs: 1500 },
    files: {},
  });
  record('3-z', { status: 'error', index: 3, a: { path: 42 }, b: {}, error: { code: { x: 1 }, message: ['<s>'] } });
});

describe('reliability: a report over crafted result.json files (item 9)', () => {
  it('escapes every field and reads images only inside OUTDIR', async () => {
    const r = await runCli(['report', out, '--json']);
    expect(r.code, r.stderr).toBe(0);
    const html = readFileSync(JSON.parse(r.stdout).path, 'utf8');
    for (const bad of ['<script>alert', '<img src=x', '<b>bold', '<i>t</i>', '<u>m</u>', '<em>w', '<s>']) {
      expect(html).not.toContain(bad);
    }
    const thumbs = readdirSync(path.join(out, 'report', 'thumbs')).sort();
    // Pair 2's A and B are inside OUTDIR; pair 1's A is outside, its B a link out of OUTDIR, its flow a path out.
    expect(thumbs).toEqual(['2-y-a.jpg', '2-y-b.jpg']);
    // A value of the wrong type is left out (the pair's number falls back to its position).
    expect(html).toMatch(/<tr data-index="1" data-aepe="" data-pck1="" data-pck3="" data-pck5="" data-time=""/);
    expect(html).toMatch(
      /<tr data-index="2" data-aepe="1.25" data-pck1="0.5" data-pck3="0.75" data-pck5="1" data-time="1500"/,
    );
  });

  it('shows the inputs the user names with --list or --dir', async () => {
    const list = path.join(tmp, 'pairs.csv');
    writeFileSync(list, `a,b\n${secret},${inside}\n`);
    const r = await runCli(['report', out, '--list', list, '-o', path.join(tmp, 'rep-list'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(path.join(tmp, 'rep-list', 'thumbs', '1-x-a.jpg'))).toBe(true);
    expect(existsSync(path.join(tmp, 'rep-list', 'thumbs', '1-x-flow.jpg'))).toBe(false);
    const d = await runCli(['report', out, '--dir', path.dirname(secret), '-o', path.join(tmp, 'rep-dir')]);
    expect(d.code, d.stderr).toBe(0);
    expect(readdirSync(path.join(tmp, 'rep-dir', 'thumbs')).sort()).toEqual([
      '1-x-a.jpg',
      '1-x-b.jpg',
      '2-y-a.jpg',
      '2-y-b.jpg',
    ]);
  });
});
