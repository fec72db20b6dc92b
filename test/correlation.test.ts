import { describe, expect, it } from 'vitest';
import { backends, correlate, GocorError } from '../lib';
import { corrGlobal64, corrLocal64, manifest, randn, readF32, worstRatio } from './support/ref';

// float32 FMA dot products of length C: |err| <= gamma_C · Σ|a_c b_c| with gamma_C ≈ C·2^-24 in the
// worst case; blocked sums are far tighter. We allow 2·ceil(log2 C + 1)·2^-24·Σ|ab| + 1e-30 (pairwise-like
// blocking bound) and additionally never more than C·2^-24·Σ|ab|.
const U = 2 ** -24;
const bound = (C: number, mag: Float64Array) => (i: number) =>
  Math.min(C, 8 * Math.ceil(Math.log2(C) + 1)) * U * (mag[i] as number) + 1e-30;

describe('correlate: smoke', () => {
  it('reports backends', () => {
    const b = backends();
    expect(['avx512', 'avx2', 'portable']).toContain(b.cpu.simd);
    // AMX tiles are an extension of AVX-512 machines: never reported without it.
    expect(typeof b.cpu.amx).toBe('boolean');
    if (b.cpu.simd !== 'avx512') expect(b.cpu.amx).toBe(false);
    expect(b.cpu.threads).toBeGreaterThanOrEqual(1);
    expect(typeof b.cuda.compiled).toBe('boolean');
    if (!b.cuda.available) expect(b.cuda.reason.length).toBeGreaterThan(0);
  });
});

describe('correlate: bad input', () => {
  const fm = { data: new Float32Array(2 * 3 * 4), channels: 2, height: 3, width: 4 };
  it('rejects wrong lengths, channels, options', async () => {
    await expect(correlate({ ...fm, data: new Float32Array(5) }, fm)).rejects.toMatchObject({
      code: 'ERR_GOCOR_SHAPE',
    });
    await expect(correlate(fm, { ...fm, channels: 3, data: new Float32Array(36) })).rejects.toMatchObject({
      code: 'ERR_GOCOR_SHAPE',
    });
    await expect(correlate(fm, fm, { mode: 'nope' as 'global' })).rejects.toThrow(
      /one of 'global', 'local' for options.mode/,
    );
    await expect(correlate(fm, fm, { mode: 'local', searchRadius: -1 })).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
    });
    await expect(correlate(fm, fm, { threads: 0 })).rejects.toThrow(
      /integer between 1 and 1024 for options.threads but received 0/,
    );
    const nan = new Float32Array(fm.data.length);
    nan[3] = Number.NaN;
    await expect(correlate({ ...fm, data: nan }, fm)).rejects.toBeInstanceOf(GocorError);
  });
  it('names the first value out of bounds, in any batch element, for both maps', async () => {
    const fm2 = { data: new Float32Array(2 * 3 * 4 * 5), batch: 2, channels: 3, height: 4, width: 5 };
    const query = new Float32Array(fm2.data.length);
    query[77] = Number.POSITIVE_INFINITY;
    query[100] = Number.NaN;
    await expect(correlate(fm2, { ...fm2, data: query })).rejects.toThrow(
      /Expected finite values in query\.data but element 77 is Infinity/,
    );
    const reference = new Float32Array(fm2.data.length);
    reference[119] = -2e6;
    await expect(correlate({ ...fm2, data: reference }, fm2)).rejects.toThrow(
      /Expected values of magnitude at most 1000000 in reference\.data but element 119 is -2000000/,
    );
  });
  it('rejects cuda when unavailable with its own code', async () => {
    if (backends().cuda.available) return;
    await expect(correlate(fm, fm, { device: 'cuda' })).rejects.toMatchObject({ code: 'ERR_GOCOR_CUDA_UNAVAILABLE' });
  });
});

describe('correlate: shapes and numerics against float64', () => {
  const globalCases: Array<[number, number, number, number, number, number]> = [
    // B, C, H, W, Hq, Wq
    [1, 1, 5, 7, 5, 7],
    [2, 3, 9, 4, 6, 11],
    [1, 64, 16, 16, 16, 16],
    [2, 255, 7, 13, 9, 5],
    [1, 512, 8, 9, 10, 7],
    [1, 1024, 4, 6, 5, 3],
  ];
  for (const [B, C, H, W, Hq, Wq] of globalCases) {
    it(`global B=${B} C=${C} ${H}x${W} vs ${Hq}x${Wq}`, async () => {
      const r = randn(B * C * H * W, 11 + C);
      const q = randn(B * C * Hq * Wq, 97 + C);
      const v = await correlate(
        { data: r, batch: B, channels: C, height: H, width: W },
        { data: q, batch: B, channels: C, height: Hq, width: Wq },
        { device: 'cpu' },
      );
      expect(v.shape).toEqual([B, Hq * Wq, H, W]);
      expect(v.kind).toBe('global');
      const ref = corrGlobal64(r, q, B, C, H, W, Hq, Wq);
      const { worst } = worstRatio(v.data, ref.out, bound(C, ref.mag));
      expect(worst).toBeLessThanOrEqual(1);
    });
  }
  const localCases: Array<[number, number, number, number, number]> = [
    // B, C, H, W, R
    [1, 1, 5, 6, 0],
    [2, 3, 9, 13, 1],
    [1, 32, 16, 16, 4],
    [2, 96, 11, 23, 4],
    [1, 17, 12, 7, 7],
  ];
  for (const [B, C, H, W, R] of localCases) {
    it(`local B=${B} C=${C} ${H}x${W} R=${R}`, async () => {
      const r = randn(B * C * H * W, 5 + C);
      const q = randn(B * C * H * W, 7 + C);
      const fm = (data: Float32Array) => ({ data, batch: B, channels: C, height: H, width: W });
      const v = await correlate(fm(r), fm(q), { mode: 'local', searchRadius: R, threads: 2 });
      const D = (2 * R + 1) ** 2;
      expect(v.shape).toEqual([B, D, H, W]);
      const ref = corrLocal64(r, q, B, C, H, W, R);
      const { worst } = worstRatio(v.data, ref.out, bound(C, ref.mag));
      expect(worst).toBeLessThanOrEqual(1);
    });
  }
  it('threads=1 and all threads agree exactly', async () => {
    const C = 128;
    const r = randn(C * 20 * 20, 3);
    const q = randn(C * 20 * 20, 4);
    const fm = (data: Float32Array) => ({ data, channels: C, height: 20, width: 20 });
    const a = await correlate(fm(r), fm(q), { threads: 1 });
    const b = await correlate(fm(r), fm(q));
    expect(Buffer.from(a.data.buffer).equals(Buffer.from(b.data.buffer))).toBe(true);
  });
});

describe('correlate: conformance baselines (spec 12)', () => {
  for (const c of manifest().cases) {
    it(`${c.name} baseline_correlation within |Δ| <= 2e-5 + 1e-4|expected|`, async () => {
      const fm = (file: string) => ({ data: readF32(file), batch: c.B, channels: c.C, height: c.H, width: c.W });
      const v = await correlate(fm(c.files.reference!.file), fm(c.files.query!.file), { mode: c.kind });
      const want = readF32(c.files.baseline_correlation!.file);
      expect(v.data.length).toBe(want.length);
      const { worst } = worstRatio(v.data, want, (i) => 2e-5 + 1e-4 * Math.abs(want[i] as number));
      expect(worst).toBeLessThanOrEqual(1);
    });
  }
});
