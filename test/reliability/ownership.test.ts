/**
 * The buffer contract (README "Limits and failure behaviour"): every compute function copies its
 * input arrays before it returns its Promise, so a caller may shrink, transfer or overwrite them at
 * once. Each case runs in a child process (a regression would be a segfault) with `--expose-gc`,
 * against `dist/` (build first with `npm run build:ts`), and must give exactly the results of
 * untouched inputs.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const CHILD = path.join(__dirname, 'ownership-child.js');

function run(kind: string, act: string): Record<string, string> {
  const out = execFileSync(process.execPath, ['--expose-gc', CHILD, kind, act], { encoding: 'utf8', timeout: 60_000 });
  return JSON.parse(out) as Record<string, string>;
}

describe('reliability: callers may change their arrays once a call has returned', () => {
  const reference = run('plain', 'none');

  it('covers every compute function', () => {
    expect(Object.keys(reference).sort()).toEqual(
      [
        'GlobalGOCor',
        'LocalGOCor',
        'correlateGlobal',
        'correlateLocal',
        'extractFeatures',
        'matchFeatures',
        'matchImages',
        'matchPyramids',
        'resizeFlow',
        'warpImage',
      ].sort(),
    );
    for (const v of Object.values(reference)) expect(v).toMatch(/^[0-9a-f]{16}$/);
  });

  it.each([
    ['plain', 'nan'],
    ['plain', 'transfer'],
    ['resizable', 'shrink'],
    ['resizable', 'transfer'],
    ['resizable', 'nan'],
    ['shared', 'nan'],
  ])('%s buffers, %s right after the call: same results', (kind, act) => {
    expect(run(kind, act)).toEqual(reference);
  });
});
