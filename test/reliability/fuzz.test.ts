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
  extractFeatures,
  GlobalGOCor,
  GocorError,
  LocalGOCor,
  l2normalize,
  loadImage,
  loadParams,
  match,
  matchFeatures,
  memoryLimit,
  resizeFlow,
  setMemoryLimit,
  warpImage,
} from '../../lib';
import { anyValue, optionsOf, outcome, RUNS } from './support';

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

const options = optionsOf({
  mode: fc.oneof(fc.constantFrom('global', 'local'), anyValue),
  searchRadius: fc.oneof(fc.integer({ min: 0, max: 5 }), anyValue),
  device: fc.oneof(fc.constantFrom('auto', 'cpu', 'cuda'), anyValue),
  threads: fc.oneof(fc.integer({ min: 1, max: 4 }), anyValue),
  numIter: fc.oneof(fc.integer({ min: 0, max: 3 }), anyValue),
  applyQueryLoss: fc.oneof(fc.boolean(), anyValue),
  diagnostics: fc.oneof(fc.boolean(), anyValue),
  bogus: anyValue,
});

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

describe('reliability: arrays that change under a call', () => {
  // Every compute function with its arrays on a plain, resizable or shared buffer, or detached
  // before the call; right after the call returns they are shrunk, transferred away or overwritten
  // with NaN. Either the call fails with a known code up front, or it gives the result of the
  // values it was given (a crash would end this process). Worker termination: worker.test.ts.
  const kinds = ['plain', 'resizable', 'shared', 'detached'] as const;
  const acts = ['none', 'shrink', 'transfer', 'nan'] as const;
  type Kind = (typeof kinds)[number];

  function array(n: number, kind: Kind, seed: number): Float32Array {
    const bytes = 4 * n;
    const Resizable = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer;
    const buf =
      kind === 'resizable'
        ? new Resizable(bytes, { maxByteLength: bytes + 64 })
        : kind === 'shared'
          ? new SharedArrayBuffer(bytes)
          : new ArrayBuffer(bytes);
    const a = new Float32Array(buf);
    for (let i = 0; i < n; i++) a[i] = 0.5 + 0.4 * Math.sin(i * 0.7 + seed);
    if (kind === 'detached') structuredClone(buf, { transfer: [buf as ArrayBuffer] });
    return a;
  }

  function act(a: Float32Array, what: (typeof acts)[number]): void {
    if (a.buffer instanceof SharedArrayBuffer) {
      if (what === 'nan') a.fill(Number.NaN);
      return;
    }
    const buf = a.buffer as ArrayBuffer & { resizable?: boolean; resize?: (n: number) => void };
    if (buf.byteLength === 0) return;
    if (what === 'shrink' && buf.resizable) buf.resize?.(0);
    if (what === 'transfer') structuredClone(buf, { transfer: [buf] });
    if (what === 'nan') a.fill(Number.NaN);
  }

  const calls: Record<string, (m: (n: number) => Float32Array) => [Promise<unknown>, Float32Array[]]> = {
    correlate: (m) => {
      const a = m(4 * 6 * 5);
      const b = m(4 * 6 * 5);
      const f = (data: Float32Array) => ({ data, channels: 4, height: 6, width: 5 });
      return [correlate(f(a), f(b)), [a, b]];
    },
    correlateLocal: (m) => {
      const a = m(4 * 6 * 5);
      const f = { data: a, channels: 4, height: 6, width: 5 };
      return [correlate(f, f, { mode: 'local', searchRadius: 2 }), [a]];
    },
    GlobalGOCor: (m) => {
      const a = m(4 * 5 * 5);
      const f = { data: a, channels: 4, height: 5, width: 5 };
      return [new GlobalGOCor({ numIter: 1 }).correlate(f, f), [a]];
    },
    LocalGOCor: (m) => {
      const a = m(4 * 6 * 6);
      const f = { data: a, channels: 4, height: 6, width: 6 };
      return [new LocalGOCor({ numIter: 1 }).correlate(f, f), [a]];
    },
    extractFeatures: (m) => {
      const a = m(24 * 32);
      return [extractFeatures({ data: a, channels: 1, height: 24, width: 32 }, { globalSize: 4 }), [a]];
    },
    match: (m) => {
      const a = m(24 * 32);
      const b = m(24 * 32);
      const img = (data: Float32Array) => ({ data, channels: 1, height: 24, width: 32 });
      return [match(img(a), img(b), { globalSize: 4 }), [a, b]];
    },
    matchFeatures: (m) => {
      const a = m(8 * 12 * 16);
      const f = { data: a, channels: 8, height: 12, width: 16 };
      return [matchFeatures(f, f, { globalSize: 4 }), [a]];
    },
    warpImage: (m) => {
      const b = m(3 * 8 * 8);
      const f = m(2 * 8 * 8);
      return [warpImage({ data: b, channels: 3, height: 8, width: 8 }, { data: f, width: 8, height: 8 }), [b, f]];
    },
    resizeFlow: (m) => {
      const f = m(2 * 8 * 8);
      return [resizeFlow({ data: f, width: 8, height: 8 }, { width: 5, height: 11 }), [f]];
    },
  };

  it('every compute function', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...Object.keys(calls)),
        fc.constantFrom(...kinds),
        fc.constantFrom(...acts),
        fc.integer({ min: 0, max: 1000 }),
        async (name, kind, what, seed) => {
          const call = calls[name] as (typeof calls)[string];
          const [pending, arrays] = call((n) => array(n, kind, seed));
          for (const a of arrays) act(a, what);
          const got = await outcome(() => pending.then((r) => r as { data: Float32Array }));
          if (kind === 'detached') expect(got).not.toBe('ok');
          if (got !== 'ok' || kind === 'detached') return;
          const [again] = call((n) => array(n, 'plain', seed));
          const a = (await pending) as { data?: Float32Array; levels?: { data: Float32Array }[] };
          const b = (await again) as typeof a;
          expect(a.data ?? a.levels?.[0]?.data).toEqual(b.data ?? b.levels?.[0]?.data);
        },
      ),
      { numRuns: Math.ceil(RUNS / 10) },
    );
  });
});
