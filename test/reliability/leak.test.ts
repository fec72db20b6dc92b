/** No leaks: thousands of calls leave resident memory flat after warm-up. */
import { describe, expect, it } from 'vitest';
import { correlate, GlobalGOCor } from '../../lib';
import { randn } from '../support/ref';

const CALLS = Number(process.env.GOCOR_LEAK_CALLS ?? 2000);
// Warm-up long enough for the allocator to reach its steady state: V8 frees the dropped volumes
// some 800 calls at a time (its 64 MiB external-memory allowance), and malloc keeps up to its trim
// threshold per arena (64 MiB, README "Memory between calls") of what they freed. That plateau is
// reached within the first two collections; a leak keeps growing after it (2000 calls leaking one
// 81 KiB volume each: 160 MB).
const WARMUP = 1500;

async function rssGrowth(label: string, call: () => Promise<unknown>): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < WARMUP; i++) await call();
  gc?.();
  const start = process.memoryUsage().rss;
  for (let i = 0; i < CALLS; i++) await call();
  gc?.();
  await new Promise((r) => setTimeout(r, 50));
  gc?.();
  const growth = (process.memoryUsage().rss - start) / 2 ** 20;
  console.log(`leak: ${label}: ${CALLS} calls, RSS growth ${growth.toFixed(1)} MB`);
  return growth;
}

describe('reliability: leaks', () => {
  const C = 32;
  const f = { data: randn(C * 12 * 12, 1), channels: C, height: 12, width: 12 };
  const g = { data: randn(C * 12 * 12, 2), channels: C, height: 12, width: 12 };
  it('correlate', async () => {
    expect(await rssGrowth('correlate', () => correlate(f, g))).toBeLessThan(50);
  });
  it('GlobalGOCor.correlate', async () => {
    const m = new GlobalGOCor({ numIter: 3 });
    expect(await rssGrowth('GlobalGOCor.correlate', () => m.correlate(f, g))).toBeLessThan(50);
  });
});
