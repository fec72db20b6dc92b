/**
 * gocor's native call queue. At most `limit` native jobs run at once (default: the number of CPU
 * cores, at least 2), so that many concurrent calls neither oversubscribe the cores nor fill
 * libuv's thread pool (which sharp and fs also need). An AbortSignal cancels a job while it waits
 * and stops it at its next stage boundary while it runs.
 */
import os from 'node:os';
import { captureStack, fromNative, GocorError } from './errors';
import type { NativeJob, Ran } from './native';

interface Waiter {
  start: () => void;
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
    running++;
    w.start();
  }
}

function abortError(signal: AbortSignal): GocorError {
  const reason = signal.reason instanceof Error ? signal.reason.message : 'aborted';
  return new GocorError('ERR_GOCOR_ABORTED', `The operation was aborted (${reason})`);
}

// One 'abort' listener per signal, however many calls share it (more than 10 listeners on one
// signal would print MaxListenersExceededWarning); each call adds and removes a handler here.
const abortHandlers = new WeakMap<AbortSignal, Set<() => void>>();

function onAbort(signal: AbortSignal, handler: () => void): () => void {
  let handlers = abortHandlers.get(signal);
  if (!handlers) {
    const set = new Set<() => void>();
    handlers = set;
    abortHandlers.set(signal, set);
    signal.addEventListener(
      'abort',
      () => {
        abortHandlers.delete(signal);
        for (const h of set) h();
      },
      { once: true },
    );
  }
  handlers.add(handler);
  return () => handlers.delete(handler);
}

/**
 * Prepares a native job now (`prepare` calls a binding function, which copies the inputs before
 * it returns) and runs it when a slot is free; maps native failures to GocorError with the
 * caller's stack. Call it before the first `await` of a public function, so that the caller's
 * arrays are copied before the caller gets its Promise back.
 */
export function runNative<T>(prepare: () => NativeJob<T>, signal?: AbortSignal): Promise<T & Ran> {
  const stack = captureStack();
  if (signal?.aborted) return Promise.reject(abortError(signal));
  let job: NativeJob<T>;
  try {
    job = prepare();
  } catch (err) {
    return Promise.reject(fromNative(err, stack));
  }
  return new Promise<T & Ran>((resolve, reject) => {
    let started = false;
    const waiter: Waiter = {
      start: () => {
        started = true;
        let p: Promise<T & Ran>;
        try {
          p = job.start();
        } catch (err) {
          p = Promise.reject(err);
        }
        // An abort before this settles always rejects, also one that came after the native job's
        // last stage boundary.
        p.then(
          (value) => (signal?.aborted ? reject(abortError(signal)) : resolve(value)),
          (err) => reject(signal?.aborted ? abortError(signal) : fromNative(err, stack)),
        ).finally(() => {
          unlisten?.();
          running--;
          pump();
        });
      },
    };
    const unlisten =
      signal &&
      onAbort(signal, () => {
        job.cancel();
        if (started) return; // the native job rejects at its next stage boundary
        waiting.splice(waiting.indexOf(waiter), 1);
        unlisten?.();
        reject(abortError(signal));
      });
    waiting.push(waiter);
    pump();
  });
}
