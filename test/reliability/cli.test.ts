/**
 * The command line under random arguments: every run ends with exit code 0, 1 or 2 and, on
 * failure, a one-line message on stderr — never a stack trace, a signal or a hang.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

const ROOT = path.join(__dirname, '..', '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const RUNS = Number(process.env.GOCOR_CLI_FUZZ_RUNS ?? 60);

describe('reliability: the CLI under random arguments', () => {
  it('exits 0, 1 or 2 with one clear line, never a crash', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'gocor-clifuzz-'));
    const corrupt = path.join(dir, 'corrupt.png');
    writeFileSync(corrupt, Buffer.from('\x89PNG\r\n\x1a\n this is not really a png'));
    const empty = path.join(dir, 'empty.npy');
    writeFileSync(empty, Buffer.alloc(0));
    const img = path.join(ROOT, 'examples', 'brick.png');
    const paths = fc.constantFrom(corrupt, empty, img, path.join(dir, 'missing.png'), dir, '', '-', '--');
    const values = fc.oneof(
      paths,
      fc.constantFrom('0', '-1', 'nan', '1e9', '16', 'gocor', 'cuda', '3,3', '64x64', 'x'),
      fc.string({ maxLength: 8 }),
    );
    const flags = fc.constantFrom(
      '-o',
      '--method',
      '--global-size',
      '--num-iter',
      '--device',
      '--threads',
      '--output-shape',
      '--gt',
      '--concurrency',
      '--dir',
      '--params',
      '--level',
      '--search-radius',
      '--json',
      '--quiet',
      '--bogus',
    );
    const argv = fc.tuple(
      fc.constantFrom('match', 'batch', 'report', 'correlate', 'info', 'nonsense'),
      fc.array(fc.oneof(paths, values), { maxLength: 3 }),
      fc.array(fc.tuple(flags, values), { maxLength: 4 }),
    );
    await fc.assert(
      fc.asyncProperty(argv, async ([cmd, positional, opts]) => {
        const args = [cmd, ...positional, ...opts.flat()].map((a) => (a === '-o' ? '-o' : a));
        // Outputs, when a command gets that far, land in the scratch folder.
        if (!args.includes('-o')) args.push('-o', path.join(dir, 'out'));
        const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000, cwd: dir });
        expect(r.signal).toBeNull();
        expect([0, 1, 2]).toContain(r.status);
        expect(r.stderr).not.toMatch(/\n\s+at .+:\d+:\d+\)?\n/); // no stack trace
        // A failed command says so in one line; a batch names each failed pair with its code.
        if (r.status === 1) expect(r.stderr).toMatch(/(^gocor: |failed: )ERR_GOCOR_[A-Z_]+/m);
      }),
      { numRuns: RUNS },
    );
  }, 300_000);
});
