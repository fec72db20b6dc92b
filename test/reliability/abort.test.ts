/**
 * Cancellation: an AbortSignal stops a running match or GOCor call at its next stage boundary
 * (not only calls waiting in the queue), and one signal may be shared by many calls.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { correlate, GlobalGOCor, type Image, loadImage, match, queueStats } from '../../lib';
import { randn } from '../support/ref';

async function timed<T>(call: () => Promise<T>): Promise<{ outcome: string; ms: number }> {
  const t0 = performance.now();
  const outcome = await call().then(
    () => 'ok',
    (e: { code?: string }) => e.code ?? String(e),
  );
  return { outcome, ms: performance.now() - t0 };
}

function abortAfter(ms: number): AbortSignal {
  const ac = new AbortController();
  setTimeout(() => ac.abort(), ms);
  return ac.signal;
}

describe('reliability: aborting running work', () => {
  it('a match aborted 50 ms in rejects with ERR_GOCOR_ABORTED well before it would have finished', async () => {
    const img: Image = await loadImage(path.join(__dirname, '..', '..', 'examples', 'astronaut.png'), { gray: true });
    const full = await timed(() => match(img, img, { threads: 2 }));
    expect(full.outcome).toBe('ok');
    const aborted = await timed(() => match(img, img, { threads: 2, signal: abortAfter(50) }));
    console.log(
      `abort: match ${full.ms.toFixed(0)} ms in full, aborted after 50 ms -> rejected at ${aborted.ms.toFixed(0)} ms`,
    );
    expect(aborted.outcome).toBe('ERR_GOCOR_ABORTED');
    expect(aborted.ms).toBeLessThan(full.ms / 2);
  });

  it('a GlobalGOCor call aborted 50 ms in stops between iterations', async () => {
    const C = 64;
    const f = { data: randn(C * 24 * 24, 5), channels: C, height: 24, width: 24 };
    const gocor = new GlobalGOCor({ numIter: 64, threads: 2 });
    const full = await timed(() => gocor.correlate(f, f));
    expect(full.outcome).toBe('ok');
    const aborted = await timed(() => gocor.correlate(f, f, { signal: abortAfter(50) }));
    console.log(`abort: GlobalGOCor ${full.ms.toFixed(0)} ms in full -> rejected at ${aborted.ms.toFixed(0)} ms`);
    expect(aborted.outcome).toBe('ERR_GOCOR_ABORTED');
    expect(aborted.ms).toBeLessThan(full.ms / 2);
  });

  it('one signal shared by 40 calls: no MaxListenersExceededWarning, all settle, the queue drains', async () => {
    const warnings: string[] = [];
    const onWarning = (w: Error) => warnings.push(`${w.name}: ${w.message}`);
    process.on('warning', onWarning);
    try {
      const f = { data: randn(16 * 16 * 16, 9), channels: 16, height: 16, width: 16 };
      const ac = new AbortController();
      const done = await Promise.allSettled(Array.from({ length: 40 }, () => correlate(f, f, { signal: ac.signal })));
      expect(done.filter((d) => d.status === 'rejected')).toEqual([]);
      const calls = Array.from({ length: 40 }, () => correlate(f, f, { signal: ac.signal }));
      ac.abort();
      const settled = await Promise.allSettled(calls);
      expect(settled.every((s) => s.status === 'rejected')).toBe(true);
      await new Promise((r) => setImmediate(r));
    } finally {
      process.off('warning', onWarning);
    }
    expect(warnings).toEqual([]);
    expect(queueStats()).toMatchObject({ running: 0, waiting: 0 });
  });
});
