/**
 * The raw binding under bad arguments, and the bounds that keep float32 arithmetic finite: nothing
 * aborts the process, every failure is an Error with a gocor code, and absurd but finite features
 * or parameters are refused with a message that names them instead of giving all-NaN volumes.
 */
import { spawnSync } from 'node:child_process';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  correlate,
  defaultGlobalParams,
  defaultLocalParams,
  extractFeatures,
  GlobalGOCor,
  LocalGOCor,
  match,
} from '../../lib';
import { native } from '../../lib/native';
import { randn } from '../support/ref';
import { anyValue, RUNS } from './support';

const CODES = /^ERR_GOCOR_[A-Z_]+$/;

// Calls fn; a thrown or rejected value must be an Error with a gocor code.
async function settle(fn: () => unknown): Promise<void> {
  try {
    const r = fn() as { start?: () => Promise<unknown>; cancel?: () => void } | undefined;
    // A job handle: run it (bad dims were refused before it was made).
    if (r && typeof r.start === 'function') await r.start();
  } catch (err) {
    expect(err).toBeInstanceOf(Error);
    expect((err as { code?: string }).code).toMatch(CODES);
  }
}

describe('reliability: the raw binding never aborts', () => {
  it('defaultGlobalParams with bad channel counts or seeds throws ERR_GOCOR_INVALID_ARG', () => {
    const n = native() as unknown as { defaultGlobalParams: (...a: unknown[]) => unknown };
    for (const args of [[-1, 0], [0, 0], [1e9, 0], ['x', 0], [Number.NaN, 0], [4, -1], [4, Number.NaN], []]) {
      expect(() => n.defaultGlobalParams(...args)).toThrow(expect.objectContaining({ code: 'ERR_GOCOR_INVALID_ARG' }));
    }
  });

  it('every exported function under random arguments', async () => {
    const n = native() as unknown as Record<string, (...a: unknown[]) => unknown>;
    const names = Object.keys(n).filter((k) => typeof n[k] === 'function');
    expect(names.length).toBeGreaterThan(10);
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...names), fc.array(anyValue, { maxLength: 6 }), async (name, args) => {
        await settle(() => n[name]?.(...args));
      }),
      { numRuns: RUNS },
    );
  });
});

describe('reliability: absurd but finite inputs are refused', () => {
  const fm = (scale: number) => ({ data: randn(8 * 8 * 8, 3).map((v) => v * scale), channels: 8, height: 8, width: 8 });

  it('feature values beyond 1e6 (3e38: all-NaN volumes before)', async () => {
    for (const call of [
      () => correlate(fm(3e38 / 5), fm(1)),
      () => correlate(fm(1), fm(1e7), { mode: 'local' }),
      () => new GlobalGOCor().correlate(fm(1e7), fm(1)),
      () => new LocalGOCor().correlate(fm(1), fm(1e7)),
    ]) {
      await expect(call()).rejects.toMatchObject({
        code: 'ERR_GOCOR_INVALID_ARG',
        message: expect.stringMatching(
          /Expected (values of magnitude at most 1000000|finite values) in (reference|query)\.data/,
        ),
      });
    }
  });

  it('the native copy names the first bad element, past its first chunk, and keeps the bound at 1e6', async () => {
    // 64 channels x 16 x 16 = 16384 values: element 9000 lies in the copy's third 4096-value chunk.
    const map = (i: number, v: number) => {
      const data = randn(64 * 16 * 16, 5);
      if (i >= 0) data[i] = v;
      return { data, channels: 64, height: 16, width: 16 };
    };
    await expect(correlate(map(9000, Number.NaN), map(-1, 0))).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
      message: 'Expected finite values in reference.data but element 9000 is NaN',
    });
    await expect(new LocalGOCor().correlate(map(-1, 0), map(16383, -2e6))).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
      message: 'Expected values of magnitude at most 1000000 in query.data but element 16383 is -2000000',
    });
    // At the bound itself: accepted, as TypeScript's MAX_VALUE does.
    await expect(correlate(map(3, 1e6), map(-1, 0))).resolves.toMatchObject({ kind: 'global' });
    // A level of a FeaturePyramid given to match.
    const pyr = await extractFeatures({
      data: randn(3 * 64 * 64, 7).map((v) => 0.5 + 0.1 * v),
      channels: 3,
      width: 64,
      height: 64,
    });
    const bad = {
      ...pyr,
      levels: pyr.levels.map((l, i) =>
        i === 1 ? { ...l, data: l.data.map((v, j) => (j === 5 ? Number.POSITIVE_INFINITY : v)) } : l,
      ),
    };
    await expect(match(pyr, bad)).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
      message: 'Expected finite values in b.levels[1].data but element 5 is Infinity',
    });
  });

  it('GOCor parameters beyond 1e6 (filterReg 1e30: all-NaN volumes before)', () => {
    expect(() => new GlobalGOCor({ params: { ...defaultGlobalParams(8), filterReg: 1e30 } })).toThrow(
      /params\.filterReg but received 1e\+30/,
    );
    expect(() => new LocalGOCor({ params: { ...defaultLocalParams(), scaling: 1e30 } })).toThrow(/params\.scaling/);
    const p = defaultGlobalParams(8);
    expect(() => new GlobalGOCor({ params: { ...p, regWeight2: p.regWeight2.map(() => 3e38) } })).toThrow(
      /params\.regWeight2 but element 0 is 3\.\d+e\+38/,
    );
  });

  it('a divergent optimisation within the bounds (step length e^50) is refused, not returned as NaN', async () => {
    const params = { ...defaultGlobalParams(8), logStepLength: 50 };
    await expect(new GlobalGOCor({ params, numIter: 10 }).correlate(fm(1), fm(1))).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
      message: expect.stringMatching(/the GOCor volume is not finite: float32 overflowed/),
    });
  });
});

describe('reliability: GOCOR_SIMD', () => {
  const simd = (value: string) =>
    spawnSync(process.execPath, ['-e', "console.log(require('./dist/index.js').backends().cpu.simd)"], {
      cwd: `${__dirname}/../..`,
      env: { ...process.env, GOCOR_SIMD: value },
      encoding: 'utf8',
    });

  it('is read case-insensitively, and an unknown value is ignored with a warning', () => {
    const plain = simd('portable');
    expect(plain.stdout.trim()).toBe('portable');
    expect(simd('PORTABLE').stdout.trim()).toBe('portable');
    const hw = simd('').stdout.trim();
    const unknown = simd('AVX3');
    expect(unknown.stdout.trim()).toBe(hw);
    expect(unknown.stderr).toMatch(
      /\[GOCOR_SIMD_UNKNOWN\] Warning: GOCOR_SIMD="AVX3" is not one of portable, avx2, avx512/,
    );
  });
});
