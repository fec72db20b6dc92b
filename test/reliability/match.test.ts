/**
 * Reliability of the image-to-flow path: random arguments at match, warpImage, flowMetrics,
 * readFlo and readNpy; 64 concurrent matches equal sequential ones with a responsive event loop;
 * 2,000 matches leave resident memory flat.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { flowMetrics, type Image, match, readFlo, readNpy, warpImage } from '../../lib';
import { randn } from '../support/ref';
import { anyValue, optionsOf, outcome, RUNS, sequentialThenConcurrent } from './support';

/** A smooth random gray image (so matching has structure), size H x W. */
function texture(H: number, W: number, seed: number): Image {
  const n = randn(H * W, seed);
  const data = new Float32Array(H * W);
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++) {
      let s = 0;
      for (let dy = -1; dy <= 1; dy++)
        for (let dx = -1; dx <= 1; dx++) s += n[((y + dy + H) % H) * W + ((x + dx + W) % W)] as number;
      data[y * W + x] = Math.min(1, Math.max(0, 0.5 + 0.12 * s));
    }
  return { data, channels: 1, height: H, width: W };
}

const image = fc.oneof(
  fc
    .record({ h: fc.integer({ min: 1, max: 40 }), w: fc.integer({ min: 1, max: 40 }), c: fc.constantFrom(1, 3) })
    .map(({ h, w, c }) => ({
      data: new Float32Array(h * w * c).fill(0.5),
      channels: c,
      height: h,
      width: w,
    })),
  fc.record({
    data: fc.oneof(fc.float32Array({ maxLength: 30 }), anyValue),
    channels: anyValue,
    height: anyValue,
    width: anyValue,
  }),
  anyValue,
);

const matchOptions = optionsOf({
  method: fc.oneof(fc.constantFrom('gocor', 'correlation'), anyValue),
  globalSize: fc.oneof(fc.integer({ min: 2, max: 20 }), anyValue),
  numIter: fc.oneof(
    fc.record({ global: fc.integer({ min: 0, max: 3 }), local: fc.integer({ min: 0, max: 3 }) }),
    anyValue,
  ),
  outputShape: fc.oneof(
    fc.record({ width: fc.integer({ min: 1, max: 50 }), height: fc.integer({ min: 1, max: 50 }) }),
    anyValue,
  ),
  confidence: fc.oneof(fc.constantFrom('none', 'peak', 'forwardBackward'), anyValue),
  device: fc.oneof(fc.constantFrom('auto', 'cpu', 'cuda'), anyValue),
  threads: fc.oneof(fc.integer({ min: 1, max: 2 }), anyValue),
});

describe('reliability: matching entry points under random arguments', () => {
  it('match', async () => {
    await fc.assert(
      fc.asyncProperty(image, image, matchOptions, async (a, b, o) => {
        await outcome(() => match(a as never, b as never, o as never));
      }),
      { numRuns: Math.ceil(RUNS / 3) },
    );
  });

  it('warpImage, flowMetrics, readFlo, readNpy', async () => {
    const flow = fc.oneof(
      fc.record({ h: fc.integer({ min: 1, max: 8 }), w: fc.integer({ min: 1, max: 8 }) }).map(({ h, w }) => ({
        data: new Float32Array(2 * h * w).fill(0.25),
        width: w,
        height: h,
      })),
      anyValue,
    );
    await fc.assert(
      fc.asyncProperty(
        image,
        flow,
        flow,
        fc.oneof(fc.uint8Array({ maxLength: 64 }), anyValue),
        async (img, f, g, bytes) => {
          await outcome(() => warpImage(img as never, f as never));
          await outcome(() => flowMetrics(f as never, g as never));
          await outcome(() => readFlo(bytes as never));
          await outcome(() => readNpy(bytes as never));
        },
      ),
      { numRuns: RUNS },
    );
  });
});

describe('reliability: matching under load and over time', () => {
  it('64 concurrent matches equal sequential ones; p99 event-loop delay < 50 ms', async () => {
    const pairs = Array.from({ length: 4 }, (_, i) => [texture(96, 96, 10 + i), texture(96, 96, 20 + i)] as const);
    const job = (i: number) => {
      const [a, b] = pairs[i % pairs.length]!;
      return match(a, b, { method: i % 2 ? 'gocor' : 'correlation', globalSize: 8 });
    };
    const { mismatches, seconds, p99 } = await sequentialThenConcurrent(64, job);
    expect(mismatches).toEqual([]);
    console.log(
      `load: 64 concurrent 96x96 matches in ${seconds.toFixed(2)} s (${(64 / seconds).toFixed(1)} pairs/s), p99 event-loop delay ${p99.toFixed(1)} ms`,
    );
    expect(p99).toBeLessThan(50);
  });

  it('2,000 matches: RSS growth < 50 MB after warm-up', async () => {
    const calls = Number(process.env.GOCOR_LEAK_CALLS ?? 2000);
    const a = texture(40, 40, 1);
    const b = texture(40, 40, 2);
    const gc = (globalThis as { gc?: () => void }).gc;
    const one = () => match(a, b, { globalSize: 4, finestStride: 4 });
    for (let i = 0; i < 100; i++) await one();
    gc?.();
    const start = process.memoryUsage().rss;
    for (let i = 0; i < calls; i++) await one();
    gc?.();
    const growth = (process.memoryUsage().rss - start) / 2 ** 20;
    console.log(`leak: match: ${calls} calls, RSS growth ${growth.toFixed(1)} MB`);
    expect(growth).toBeLessThan(50);
    // About 45 s alone on a 2-core machine; allow for the test files that run beside it.
  }, 240_000);
});
