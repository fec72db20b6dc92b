/** Shared by the reliability tests: what a bad call may end in, and a load run. */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import fc from 'fast-check';
import { GocorError } from '../../lib';

/** The codes bad input may produce (never ERR_GOCOR_INTERNAL, never another error type). */
export const BAD_INPUT_CODES = new Set([
  'ERR_GOCOR_INVALID_ARG',
  'ERR_GOCOR_SHAPE',
  'ERR_GOCOR_TOO_LARGE',
  'ERR_GOCOR_CUDA_UNAVAILABLE',
  'ERR_GOCOR_IMAGE',
  'ERR_GOCOR_IO',
  'ERR_GOCOR_PARAMS',
]);

/** Runs fn; returns 'ok' or the GocorError code; fails the property on any other outcome. */
export async function outcome(fn: () => unknown): Promise<string> {
  try {
    await fn();
    return 'ok';
  } catch (err) {
    if (!(err instanceof GocorError)) throw new Error(`not a GocorError: ${String(err)}`);
    if (!BAD_INPUT_CODES.has(err.code)) throw new Error(`unexpected code ${err.code}: ${err.message}`);
    if (err.message.length < 10) throw new Error(`uninformative message: ${err.message}`);
    return err.code;
  }
}

/** Anything at all, biased towards near-miss values of the right kinds. */
export const anyValue = fc.oneof(
  fc.anything(),
  fc.constantFrom(
    0,
    -1,
    1.5,
    Number.NaN,
    Number.POSITIVE_INFINITY,
    2 ** 31,
    'cpu',
    'cuda',
    'gocor',
    null,
    undefined,
    4,
    16,
    64,
  ),
  fc.float32Array({ maxLength: 40 }),
  fc.integer({ min: -3, max: 70 }),
);

export const RUNS = Number(process.env.GOCOR_FUZZ_RUNS ?? 1500);

/** An options argument: undefined, anything, or an object with any subset of `fields`. */
export function optionsOf(fields: Record<string, fc.Arbitrary<unknown>>): fc.Arbitrary<unknown> {
  return fc.oneof(fc.constant(undefined), fc.record(fields, { requiredKeys: [] }), anyValue);
}

/** What `sequentialThenConcurrent` saw. */
export interface ConcurrentRun {
  /** Indexes whose concurrent result differs, byte for byte, from the sequential one. */
  mismatches: number[];
  /** Wall time of the concurrent phase. */
  seconds: number;
  /** 99th percentile of the event-loop delay during the concurrent phase, in ms. */
  p99: number;
}

/**
 * Runs job(0) .. job(n - 1) one after another, then all n at once while the event-loop delay is
 * sampled. `around`, when given, is called just before the concurrent phase and the function it
 * returns just after (the load test samples the thread count there).
 */
export async function sequentialThenConcurrent(
  n: number,
  job: (i: number) => Promise<{ data: Float32Array }>,
  around?: () => () => void,
): Promise<ConcurrentRun> {
  const bytes = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  const sequential: Float32Array[] = [];
  for (let i = 0; i < n; i++) sequential.push((await job(i)).data);
  const after = around?.();
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  const t0 = performance.now();
  const results = await Promise.all(Array.from({ length: n }, (_, i) => job(i)));
  const seconds = (performance.now() - t0) / 1000;
  h.disable();
  after?.();
  const mismatches = results.flatMap((r, i) => (bytes(r.data).equals(bytes(sequential[i] as Float32Array)) ? [] : [i]));
  return { mismatches, seconds, p99: h.percentile(99) / 1e6 };
}
