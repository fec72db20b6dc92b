/** The one error class of gocor. `code` is stable and machine-readable; the message names the option and value. */
export type GocorErrorCode =
  | 'ERR_GOCOR_INVALID_ARG'
  | 'ERR_GOCOR_SHAPE'
  | 'ERR_GOCOR_TOO_LARGE'
  | 'ERR_GOCOR_CUDA_UNAVAILABLE'
  | 'ERR_GOCOR_CUDA_OOM'
  | 'ERR_GOCOR_CUDA'
  | 'ERR_GOCOR_ABORTED'
  | 'ERR_GOCOR_IMAGE'
  | 'ERR_GOCOR_IO'
  | 'ERR_GOCOR_PARAMS'
  | 'ERR_GOCOR_NATIVE_LOAD'
  | 'ERR_GOCOR_INTERNAL';

const KNOWN_CODES = new Set<string>([
  'ERR_GOCOR_INVALID_ARG',
  'ERR_GOCOR_SHAPE',
  'ERR_GOCOR_TOO_LARGE',
  'ERR_GOCOR_CUDA_UNAVAILABLE',
  'ERR_GOCOR_CUDA_OOM',
  'ERR_GOCOR_CUDA',
  'ERR_GOCOR_ABORTED',
  'ERR_GOCOR_IMAGE',
  'ERR_GOCOR_IO',
  'ERR_GOCOR_PARAMS',
  'ERR_GOCOR_NATIVE_LOAD',
  'ERR_GOCOR_INTERNAL',
]);

export class GocorError extends Error {
  readonly code: GocorErrorCode;

  constructor(code: GocorErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'GocorError';
    this.code = code;
  }
}

/**
 * Captures the caller's stack before an asynchronous native call, so that a native failure
 * reported later carries the stack of the code that made the call (as sharp does).
 */
export function captureStack(): Error {
  const holder = new Error();
  Error.captureStackTrace?.(holder, captureStack);
  return holder;
}

/** Turns whatever a native call rejected with into a GocorError with the caller's stack. */
export function fromNative(err: unknown, callerStack: Error): GocorError {
  if (err instanceof GocorError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const code =
    typeof e?.code === 'string' && KNOWN_CODES.has(e.code) ? (e.code as GocorErrorCode) : 'ERR_GOCOR_INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : String(err);
  const out = new GocorError(code, message, { cause: err });
  const callerFrames = callerStack.stack?.split('\n').slice(1).join('\n');
  if (callerFrames) out.stack = `GocorError: ${message}\n${callerFrames}`;
  return out;
}
