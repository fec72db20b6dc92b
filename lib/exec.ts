/** The execution options every compute call takes (device, threads, signal), and the per-call memory limit. */
import { GocorError } from './errors';
import type { NativeExec } from './native';
import type { ExecOptions } from './types';
import { int, oneOf } from './validate';

export const EXEC_KEYS = ['device', 'threads', 'signal'] as const;

export function execOptions(opts: Record<string, unknown>, name: string): NativeExec & { signal?: AbortSignal } {
  const device = oneOf(opts.device, `${name}.device`, ['auto', 'cpu', 'cuda'] as const, 'auto');
  const threads = opts.threads === undefined ? 0 : int(opts.threads, `${name}.threads`, 1, 1024);
  const signal = opts.signal as ExecOptions['signal'];
  if (signal !== undefined && !(signal instanceof AbortSignal)) {
    throw new GocorError('ERR_GOCOR_INVALID_ARG', `Expected AbortSignal for ${name}.signal`);
  }
  return { device, threads, signal };
}

/** Default cap on the bytes one call may allocate for its result and working set: 2 GiB. */
export const DEFAULT_MAX_BYTES = 2 * 1024 ** 3;
let maxBytes = DEFAULT_MAX_BYTES;

/** Sets the process-wide memory cap for one call (bytes, at least 1 MiB). */
export function setMemoryLimit(bytes: number): void {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 2 ** 20) {
    throw new GocorError(
      'ERR_GOCOR_INVALID_ARG',
      `Expected number of bytes >= 1048576 for memoryLimit but received ${bytes}`,
    );
  }
  maxBytes = bytes;
}

export function memoryLimit(): number {
  return maxBytes;
}

/** A byte count for people: KiB below 1 MiB, MiB below 1 GiB, GiB above. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024 ** 2) return `${Math.ceil(bytes / 1024)} KiB`;
  if (bytes < 1024 ** 3) return `${(bytes / 1024 ** 2).toFixed(1)} MiB`;
  return `${(bytes / 1024 ** 3).toFixed(2)} GiB`;
}

/** Refuses work whose estimated memory exceeds the cap, before anything is allocated. */
export function checkMemory(bytes: number, what: string, hint: string): void {
  if (bytes > maxBytes) {
    throw new GocorError(
      'ERR_GOCOR_TOO_LARGE',
      `${what} needs about ${formatBytes(bytes)}, over the memory limit of ${formatBytes(maxBytes)}; ${hint} (or raise the limit with setMemoryLimit)`,
    );
  }
}
