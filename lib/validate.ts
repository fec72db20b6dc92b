/**
 * Validation of every public option before any native call. One message format throughout:
 * "Expected <what> for <name> but received <value> of type <type>".
 */
import { GocorError, type GocorErrorCode } from './errors';

export function describe(value: unknown): string {
  if (value === null) return 'null of type object';
  if (value === undefined) return 'undefined';
  if (ArrayBuffer.isView(value)) {
    const v = value as ArrayBufferView & { length?: number };
    return `${v.constructor.name}(${v.length ?? v.byteLength})`;
  }
  let shown: string;
  if (typeof value === 'string') shown = JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  else if (typeof value === 'object') shown = Array.isArray(value) ? `array(${value.length})` : 'object';
  else shown = String(value);
  return `${shown} of type ${typeof value}`;
}

export function invalid(
  what: string,
  name: string,
  value: unknown,
  code: GocorErrorCode = 'ERR_GOCOR_INVALID_ARG',
): GocorError {
  return new GocorError(code, `Expected ${what} for ${name} but received ${describe(value)}`);
}

export function int(value: unknown, name: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw invalid(`integer between ${min} and ${max}`, name, value);
  }
  return value;
}

export function optInt(value: unknown, name: string, min: number, max: number, fallback: number): number {
  return value === undefined ? fallback : int(value, name, min, max);
}

export function num(value: unknown, name: string, min = -Infinity, max = Infinity): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < min || value > max) {
    const range = Number.isFinite(min) || Number.isFinite(max) ? ` between ${min} and ${max}` : '';
    throw invalid(`finite number${range}`, name, value);
  }
  return value;
}

export function bool(value: unknown, name: string, fallback: boolean): boolean {
  if (value === undefined) return fallback;
  if (typeof value !== 'boolean') throw invalid('boolean', name, value);
  return value;
}

export function oneOf<T extends string>(value: unknown, name: string, allowed: readonly T[], fallback: T): T {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || !(allowed as readonly string[]).includes(value)) {
    throw invalid(`one of ${allowed.map((a) => `'${a}'`).join(', ')}`, name, value);
  }
  return value as T;
}

export function object(value: unknown, name: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('object', name, value);
  return value as Record<string, unknown>;
}

export function optObject(value: unknown, name: string): Record<string, unknown> {
  return value === undefined ? {} : object(value, name);
}

/** Rejects option names that do not exist, so that typos are not silently ignored. */
export function knownKeys(opts: Record<string, unknown>, name: string, allowed: readonly string[]): void {
  for (const k of Object.keys(opts)) {
    if (!allowed.includes(k)) {
      throw new GocorError(
        'ERR_GOCOR_INVALID_ARG',
        `Unknown option ${name}.${k}; expected one of ${allowed.join(', ')}`,
      );
    }
  }
}

/**
 * Largest magnitude accepted in feature maps, images and GOCor parameters: far above any real
 * data, far enough below float32's range (3.4e38) that the products and squares the computations
 * form stay finite (README "Limits and failure behaviour").
 */
export const MAX_VALUE = 1e6;

/**
 * A Float32Array of exactly `length` values; when `finite`, each finite and of magnitude at most
 * `maxAbs` (default MAX_VALUE).
 */
/**
 * Whether every element of `a` is at most `maxAbs` in magnitude (NaN is not), read as integers: for
 * float32, |v| <= x exactly when the bits of |v| are at most those of the largest float32 <= x.
 * A branch-free pass, 2-3x faster than comparing the numbers; f32 runs it on every feature map.
 */
function withinBits(a: Float32Array, maxAbs: number): boolean {
  if (!(maxAbs >= 0)) return a.length === 0;
  const f = new Float32Array([Math.min(maxAbs, 3.4028234663852886e38)]);
  const bits = new Int32Array(f.buffer);
  if ((f[0] as number) > maxAbs) (bits[0] as number)--;
  const limit = bits[0] as number;
  const u = new Int32Array(a.buffer, a.byteOffset, a.length);
  const n = u.length;
  let bad = 0;
  let i = 0;
  for (; i + 4 <= n; i += 4) {
    bad |=
      (limit - ((u[i] as number) & 0x7fffffff)) |
      (limit - ((u[i + 1] as number) & 0x7fffffff)) |
      (limit - ((u[i + 2] as number) & 0x7fffffff)) |
      (limit - ((u[i + 3] as number) & 0x7fffffff));
  }
  for (; i < n; i++) bad |= limit - ((u[i] as number) & 0x7fffffff);
  return bad >= 0;
}

export function f32(value: unknown, name: string, length?: number, finite = true, maxAbs = MAX_VALUE): Float32Array {
  if (!(value instanceof Float32Array)) throw invalid('Float32Array', name, value);
  if (length !== undefined && value.length !== length) {
    throw new GocorError('ERR_GOCOR_SHAPE', `Expected ${length} elements for ${name} but received ${value.length}`);
  }
  if (finite && !withinBits(value, maxAbs)) {
    for (let i = 0; i < value.length; i++) {
      const v = value[i] as number;
      if (!(v <= maxAbs && v >= -maxAbs)) {
        const what = Number.isFinite(v) ? `values of magnitude at most ${maxAbs}` : 'finite values';
        throw new GocorError('ERR_GOCOR_INVALID_ARG', `Expected ${what} in ${name} but element ${i} is ${v}`);
      }
    }
  }
  return value;
}
