/**
 * Property-based bad-input tests: thousands of random arguments at every public entry point.
 * Each call must either succeed with a well-formed result or reject/throw a GocorError with a
 * known code; never another error type, a crash, an abort or a hang.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  correlate,
  GlobalGOCor,
  GocorError,
  LocalGOCor,
  l2normalize,
  loadImage,
  loadParams,
  match,
  memoryLimit,
  setMemoryLimit,
} from '../../lib';
import { anyValue, outcome, RUNS } from './support';

const dim = fc.oneof(fc.integer({ min: 1, max: 6 }), anyValue);

const featureMap = fc
  .record({
    batch: fc.option(dim, { nil: undefined }),
    channels: dim,
    height: dim,
    width: dim,
    fill: fc.oneof(fc.constant('ok'), fc.constant('short'), fc.constant('nan'), fc.constant('wrongtype')),
  })
  .map(({ batch, channels, height, width, fill }) => {
    const n = [batch ?? 1, channels, height, width].every(
      (v) => Number.isInteger(v) && (v as number) > 0 && (v as number) < 64,
    )
      ? ((batch ?? 1) as number) * (channels as number) * (height as number) * (width as number)
      : 7;
    let data: unknown = new Float32Array(n).map((_, i) => Math.sin(i + 1));
    if (fill === 'short') data = new Float32Array(Math.max(0, n - 1));
    if (fill === 'nan') (data as Float32Array)[0] = Number.NaN;
    if (fill === 'wrongtype') data = Array.from({ length: n }, () => 1);
    const fm: Record<string, unknown> = { data, channels, height, width };
    if (batch !== undefined) fm.batch = batch;
    return fm;
  });

const maybeFeatureMap = fc.oneof({ weight: 4, arbitrary: featureMap }, { weight: 1, arbitrary: anyValue });

const options = fc.oneof(
  fc.constant(undefined),
  fc.record(
    {
      mode: fc.oneof(fc.constantFrom('global', 'local'), anyValue),
      searchRadius: fc.oneof(fc.integer({ min: 0, max: 5 }), anyValue),
      device: fc.oneof(fc.constantFrom('auto', 'cpu', 'cuda'), anyValue),
      threads: fc.oneof(fc.integer({ min: 1, max: 4 }), anyValue),
      numIter: fc.oneof(fc.integer({ min: 0, max: 3 }), anyValue),
      applyQueryLoss: fc.oneof(fc.boolean(), anyValue),
      diagnostics: fc.oneof(fc.boolean(), anyValue),
      bogus: anyValue,
    },
    { requiredKeys: [] },
  ),
  anyValue,
);

describe('reliability: random arguments at every entry point', () => {
  it('correlate', async () => {
    await fc.assert(
      fc.asyncProperty(maybeFeatureMap, maybeFeatureMap, options, async (a, b, o) => {
        await outcome(() => correlate(a as never, b as never, o as never));
      }),
      { numRuns: RUNS },
    );
  });

  it('GlobalGOCor and LocalGOCor (constructor and correlate)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.boolean(),
        maybeFeatureMap,
        maybeFeatureMap,
        options,
        options,
        async (global, a, b, ctor, call) => {
          await outcome(async () => {
            const m = global ? new GlobalGOCor(ctor as never) : new LocalGOCor(ctor as never);
            await m.correlate(a as never, b as never, call as never);
          });
        },
      ),
      { numRuns: Math.ceil(RUNS / 2) },
    );
  });

  it('l2normalize', async () => {
    await fc.assert(
      fc.asyncProperty(maybeFeatureMap, async (a) => {
        await outcome(() => l2normalize(a as never));
      }),
      { numRuns: RUNS },
    );
  });

  it('loadImage on random and corrupted bytes', async () => {
    const png = readFileSync(path.join(__dirname, '..', '..', 'examples', 'brick.png'));
    const corrupt = fc.oneof(
      fc.uint8Array({ maxLength: 200 }),
      fc.integer({ min: 0, max: png.length - 1 }).map((n) => png.subarray(0, n)),
      fc.tuple(fc.integer({ min: 8, max: 2000 }), fc.integer({ min: 0, max: 255 })).map(([i, v]) => {
        const c = Buffer.from(png);
        c[i] = v;
        return c;
      }),
    );
    await fc.assert(
      fc.asyncProperty(fc.oneof(corrupt, anyValue), fc.oneof(fc.constant(undefined), anyValue), async (src, o) => {
        const r = await outcome(() => loadImage(src as never, o as never));
        if (r === 'ok') expect(src).toBeInstanceOf(Uint8Array);
      }),
      { numRuns: Math.ceil(RUNS / 5) },
    );
  });

  it('loadParams on random bytes and objects', async () => {
    const tensor = fc.record({
      shape: fc.array(fc.integer({ min: 0, max: 16 }), { maxLength: 4 }),
      data: fc.float32Array({ maxLength: 20 }),
    });
    const names = fc.constantFrom(
      'corr.corr_module.filter_initializer.target_fg',
      'corr_module.filter_optimizer.reg_layer.weight1',
      'local_corr.filter_initializer.scaling',
      'local_corr_3.filter_optimizer.filter_reg',
      'filter_optimizer.label_map_predictor.weight',
      'unknown.tensor',
    );
    const objects = fc.dictionary(names, fc.oneof(tensor, anyValue));
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.uint8Array({ maxLength: 300 }), objects, anyValue), async (src) => {
        await outcome(() => loadParams(src as never));
      }),
      { numRuns: RUNS },
    );
  });
});

describe('reliability: crafted bad images', () => {
  it('empty, truncated, and absurd header dimensions', async () => {
    const png = readFileSync(path.join(__dirname, '..', '..', 'examples', 'brick.png'));
    await expect(loadImage(Buffer.alloc(0))).rejects.toMatchObject({ code: 'ERR_GOCOR_IMAGE' });
    await expect(loadImage(png.subarray(0, 100))).rejects.toMatchObject({ code: 'ERR_GOCOR_IMAGE' });
    await expect(loadImage('/nonexistent/x.png')).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    // A PNG whose IHDR claims 100000 x 100000 pixels: refused from the header, nothing decoded.
    const huge = Buffer.from(png);
    huge.writeUInt32BE(100000, 16);
    huge.writeUInt32BE(100000, 20);
    const err = await loadImage(huge).catch((e) => e);
    expect(err).toBeInstanceOf(GocorError);
    expect(['ERR_GOCOR_TOO_LARGE', 'ERR_GOCOR_IMAGE']).toContain(err.code);
  });
});

describe('reliability: the memory limit', () => {
  it('refuses work over the limit with ERR_GOCOR_TOO_LARGE and a hint, before allocating', async () => {
    const before = memoryLimit();
    setMemoryLimit(2 * 2 ** 20);
    try {
      const big = { data: new Float32Array(64 * 64), channels: 1, height: 64, width: 64 };
      // 64x64 against 64x64: a 4096 x 4096 float volume is 64 MiB.
      await expect(correlate(big, big)).rejects.toMatchObject({ code: 'ERR_GOCOR_TOO_LARGE' });
      await expect(correlate(big, big)).rejects.toThrow(/over the memory limit of 2\.0 MiB; use smaller feature maps/);
      await expect(new GlobalGOCor().correlate(big, big)).rejects.toThrow(/globalSize/);
      const img = path.join(__dirname, '..', '..', 'examples', 'astronaut.png');
      await expect(loadImage(img)).rejects.toMatchObject({ code: 'ERR_GOCOR_TOO_LARGE' });
      await expect(match(img, img)).rejects.toMatchObject({ code: 'ERR_GOCOR_TOO_LARGE' });
      // Under the limit the same calls work.
      const small = { data: new Float32Array(8 * 8).fill(1), channels: 1, height: 8, width: 8 };
      expect((await correlate(small, small)).shape).toEqual([1, 64, 8, 8]);
      expect((await loadImage(img, { gray: true, resize: { width: 64, height: 64 } })).width).toBe(64);
    } finally {
      setMemoryLimit(before);
    }
    expect(() => setMemoryLimit(10)).toThrow(/memoryLimit/);
  });
});
