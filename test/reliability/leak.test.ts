/** No leaks: thousands of calls leave resident memory flat after warm-up. */
import { describe, expect, it } from 'vitest';
import { correlate, GlobalGOCor } from '../../lib';
import { randn } from '../support/ref';

const CALLS = Number(process.env.GOCOR_LEAK_CALLS ?? 2000);

async function rssGrowth(label: string, call: () => Promise<unknown>): Promise<number> {
  const gc = (globalThis as { gc?: () => void }).gc;
  for (let i = 0; i < 200; i++) await call();
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
