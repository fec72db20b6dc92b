/**
 * gocor's native call queue. At most `limit` native jobs run at once (default: the number of CPU
 * cores, at least 2), so that many concurrent calls neither oversubscribe the cores nor fill
 * libuv's thread pool (which sharp and fs also need). Queued jobs can be cancelled with an AbortSignal.
 */
import os from 'node:os';
import { captureStack, fromNative, GocorError } from './errors';

interface Waiter {
  start: () => void;
  signal?: AbortSignal;
  onAbort?: () => void;
}

let limit = Math.max(2, os.availableParallelism?.() ?? os.cpus().length);
let running = 0;
const waiting: Waiter[] = [];

/** Sets how many native jobs may run at once (1..64). */
export function setConcurrency(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > 64) {
    throw new GocorError(
      'ERR_GOCOR_INVALID_ARG',
      `Expected integer between 1 and 64 for concurrency but received ${n}`,
    );
  }
  limit = n;
  pump();
}

/** Jobs running and waiting now (for monitoring). */
export function queueStats(): { running: number; waiting: number; limit: number } {
  return { running, waiting: waiting.length, limit };
}

function pump(): void {
  while (running < limit && waiting.length > 0) {
    const w = waiting.shift() as Waiter;
    if (w.signal && w.onAbort) w.signal.removeEventListener('abort', w.onAbort);
    running++;
    w.start();
  }
}

function abortError(signal: AbortSignal): GocorError {
  const reason = signal.reason instanceof Error ? signal.reason.message : 'aborted';
  return new GocorError('ERR_GOCOR_ABORTED', `The operation was aborted (${reason})`);
}

/**
 * Runs `job` (which starts a native call) when a slot is free; maps native failures to
 * GocorError with the caller's stack.
 */
export function runNative<T>(job: () => Promise<T>, signal?: AbortSignal): Promise<T> {
  const stack = captureStack();
  if (signal?.aborted) return Promise.reject(abortError(signal));
  return new Promise<T>((resolve, reject) => {
    const waiter: Waiter = {
      signal,
      start: () => {
        let p: Promise<T>;
        try {
          p = job();
        } catch (err) {
          p = Promise.reject(err);
        }
        p.then(resolve, (err) => reject(fromNative(err, stack))).finally(() => {
          running--;
          pump();
        });
      },
    };
    if (signal) {
      waiter.onAbort = () => {
        const i = waiting.indexOf(waiter);
        if (i >= 0) {
          waiting.splice(i, 1);
          reject(abortError(signal));
        }
      };
      signal.addEventListener('abort', waiter.onAbort, { once: true });
    }
    waiting.push(waiter);
    pump();
  });
}
