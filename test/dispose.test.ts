/**
 * dispose(): the arrays gocor returned are detached at once and their blocks go back to the pool
 * without V8's collector; the caller's own arrays are never touched.
 */
import { PerformanceObserver } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { correlate, dispose, match } from '../lib';
import { corrGlobal64, randn } from './support/ref';

const fm = (data: Float32Array, C: number, H: number, W: number) => ({ data, channels: C, height: H, width: W });

describe('dispose', () => {
  it('empties a volume after it was read, once; the values were the float64 reference', async () => {
    const [C, H, W] = [8, 5, 6];
    const a = randn(C * H * W, 1);
    const b = randn(C * H * W, 2);
    const v = await correlate(fm(a, C, H, W), fm(b, C, H, W));
    const { out: ref } = corrGlobal64(a, b, 1, C, H, W, H, W);
    for (let i = 0; i < ref.length; i++)
      expect(Math.abs((v.data[i] as number) - (ref[i] as number))).toBeLessThan(1e-4);
    const view = new Float32Array(v.data.buffer);
    expect(dispose(v)).toBe(4 * ref.length);
    expect(v.data.length).toBe(0);
    expect(view.length).toBe(0); // every view of the buffer
    expect(dispose(v)).toBe(0);
    expect(dispose(v.data)).toBe(0);
    // A disposed array given to gocor is an input of the wrong length: a clear error.
    await expect(correlate(fm(v.data, C, H, W), fm(b, C, H, W))).rejects.toMatchObject({ code: 'ERR_GOCOR_SHAPE' });
  });

  it('disposes every array of a match result and of several values', async () => {
    const img = (seed: number) => ({
      data: randn(3 * 40 * 48, seed).map((x) => 128 + 40 * x),
      channels: 3,
      height: 40,
      width: 48,
    });
    const r = await match(img(3), img(4), { quality: 'fast' });
    const arrays = Object.values(r).filter((x): x is Float32Array => ArrayBuffer.isView(x));
    expect(arrays.length).toBeGreaterThan(1);
    const bytes = arrays.reduce((s, x) => s + x.byteLength, 0);
    const v = await correlate(fm(randn(16, 5), 1, 4, 4), fm(randn(16, 6), 1, 4, 4));
    expect(dispose(r, v)).toBe(bytes + 4 * 256);
    for (const x of arrays) expect(x.length).toBe(0);
  });

  it("never touches the caller's arrays", async () => {
    const mine = randn(64, 7);
    const copy = Float32Array.from(mine);
    expect(() => dispose(mine)).toThrow(/Expected an array gocor returned for value but received Float32Array\(64\)/);
    expect(() => dispose({ data: mine })).toThrow(expect.objectContaining({ code: 'ERR_GOCOR_INVALID_ARG' }));
    expect(() => dispose(42)).toThrow(expect.objectContaining({ code: 'ERR_GOCOR_INVALID_ARG' }));
    expect(() => dispose(new Float32Array(new SharedArrayBuffer(16)))).toThrow(
      expect.objectContaining({ code: 'ERR_GOCOR_INVALID_ARG' }),
    );
    // A result object that also holds the caller's array: only gocor's is disposed.
    const v = await correlate(fm(randn(16, 8), 1, 4, 4), fm(randn(16, 9), 1, 4, 4));
    expect(dispose({ volume: v, mine })).toBe(4 * 256);
    expect(mine).toEqual(copy);
    // Values are taken in order: a bad one throws after the ones before it were disposed, and
    // the caller's array is still untouched.
    const w = await correlate(fm(randn(16, 10), 1, 4, 4), fm(randn(16, 11), 1, 4, 4));
    expect(() => dispose(w, mine)).toThrow(/values\[1\]/);
    expect(w.data.length).toBe(0);
    expect(mine).toEqual(copy);
  });

  it('gives the memory back without the collector: no full collections, flat resident set', async () => {
    const [C, S] = [64, 32]; // 1024 positions: 4 MiB volumes
    const a = fm(randn(C * S * S, 12), C, S, S);
    const b = fm(randn(C * S * S, 13), C, S, S);
    let majors = 0;
    const obs = new PerformanceObserver((list) => {
      for (const e of list.getEntries())
        if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === 4) majors++;
    });
    obs.observe({ entryTypes: ['gc'] });
    const calls = async (n: number, release: boolean) => {
      for (let i = 0; i < n; i++) {
        const v = await correlate(a, b, { threads: 1 });
        if (release) dispose(v);
      }
      await new Promise((r) => setImmediate(r)); // the observer's entries arrive asynchronously
      await new Promise((r) => setTimeout(r, 20));
    };
    try {
      global.gc?.();
      await calls(10, true);
      majors = 0;
      const rss0 = process.memoryUsage.rss();
      await calls(100, true); // 400 MiB of volumes
      const grown = process.memoryUsage.rss() - rss0;
      expect(majors).toBeLessThanOrEqual(1);
      expect(grown).toBeLessThan(24 * 2 ** 20);
      // The same calls without dispose: V8 collects every ~64 MiB of volumes.
      majors = 0;
      await calls(100, false);
      expect(majors).toBeGreaterThanOrEqual(3);
    } finally {
      obs.disconnect();
    }
  });
});
