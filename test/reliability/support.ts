/** Shared by the reliability tests: what a bad call may end in. */
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
