/**
 * Load: many concurrent calls in one process give exactly the sequential results, the event loop
 * stays responsive meanwhile, native threads stay bounded, and work can be cancelled.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { backends, correlate, GlobalGOCor, LocalGOCor } from '../../lib';
import { randn } from '../support/ref';
import { sequentialThenConcurrent } from './support';

function threadCount(): number {
  const m = /Threads:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) : 0;
}

describe('reliability: load', () => {
  it('64 concurrent calls equal sequential ones; p99 event-loop delay < 50 ms; threads bounded', async () => {
    const C = 64;
    const H = 24;
    const W = 24;
    const inputs = Array.from({ length: 8 }, (_, i) => ({
      f: { data: randn(C * H * W, 100 + i), channels: C, height: H, width: W },
      g: { data: randn(C * H * W, 200 + i), channels: C, height: H, width: W },
    }));
    const global = new GlobalGOCor({ numIter: 3 });
    const local = new LocalGOCor({ numIter: 3 });
    const job = (i: number) => {
      const { f, g } = inputs[i % inputs.length]!;
      switch (i % 3) {
        case 0:
          return global.correlate(f, g);
        case 1:
          return local.correlate(f, g);
        default:
          return correlate(f, g, { mode: 'local' });
      }
    };
    // Threads are counted from after the sequential phase (which starts the pools) to the end.
    let before = 0;
    let peak = 0;
    const { mismatches, seconds, p99 } = await sequentialThenConcurrent(64, job, () => {
      before = threadCount();
      peak = before;
      const sampler = setInterval(() => {
        peak = Math.max(peak, threadCount());
      }, 5);
      return () => clearInterval(sampler);
    });
    expect(mismatches).toEqual([]);
    console.log(
      `load: 64 calls in ${seconds.toFixed(2)} s (${(64 / seconds).toFixed(1)} calls/s), p99 event-loop delay ${p99.toFixed(1)} ms, threads ${before} -> peak ${peak}`,
    );
    expect(p99).toBeLessThan(50);
    // gocor's pool is created once (pool size - 1 workers) and libuv's pool is 4 threads: no growth per call.
    expect(peak - before).toBeLessThanOrEqual(backends().cpu.threads + 4);
  });

  it('an AbortSignal cancels queued work and stops running work', async () => {
    const C = 128;
    const H = 32;
    const W = 32;
    const f = { data: randn(C * H * W, 1), channels: C, height: H, width: W };
    const global = new GlobalGOCor({ numIter: 3 });
    const ac = new AbortController();
    const calls = Array.from({ length: 12 }, () => global.correlate(f, f, { signal: ac.signal }));
    ac.abort();
    const settled = await Promise.allSettled(calls);
    // Queued calls reject at once; running ones at their next iteration (or, past the last one, before
    // they resolve): none resolves after the abort.
    for (const s of settled) {
      expect(s.status).toBe('rejected');
      expect((s as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_GOCOR_ABORTED' });
    }
    // An already-aborted signal rejects at once.
    await expect(global.correlate(f, f, { signal: AbortSignal.abort() })).rejects.toMatchObject({
      code: 'ERR_GOCOR_ABORTED',
    });
  });
});
