import { describe, expect, it } from 'vitest';
import { f32, MAX_VALUE } from '../lib/validate';

// f32's fast path reads the floats' bits; the number comparison it replaces is the expectation.
function accepts(values: number[], maxAbs?: number): boolean {
  try {
    f32(new Float32Array(values), 'x', undefined, true, maxAbs);
    return true;
  } catch {
    return false;
  }
}

describe('f32: magnitude and finiteness check', () => {
  const above = Math.fround(MAX_VALUE * (1 + 2 ** -20)); // the next float32s above 1e6
  it('accepts exactly the values within the bound, at every position (unrolled body and tail)', () => {
    for (let n = 1; n <= 9; n++) {
      for (let at = 0; at < n; at++) {
        for (const [v, ok] of [
          [MAX_VALUE, true],
          [-MAX_VALUE, true],
          [-0, true],
          [above, false],
          [-above, false],
          [Number.NaN, false],
          [Number.POSITIVE_INFINITY, false],
          [Number.NEGATIVE_INFINITY, false],
        ] as Array<[number, boolean]>) {
          const values = new Array<number>(n).fill(0.5);
          values[at] = v;
          expect(accepts(values)).toBe(ok);
        }
      }
    }
  });
  it('follows any bound, including one between two float32s and an infinite one', () => {
    expect(accepts([0.1], 0.1)).toBe(false); // float32(0.1) = 0.10000000149 > 0.1
    expect(accepts([0.1], 0.1000001)).toBe(true);
    expect(accepts([3e38, -3e38], Number.POSITIVE_INFINITY)).toBe(true);
    expect(accepts([Number.POSITIVE_INFINITY], Number.POSITIVE_INFINITY)).toBe(true);
    expect(accepts([Number.NaN], Number.POSITIVE_INFINITY)).toBe(false);
  });
  it('reads a view at an offset of its buffer and names the first bad element', () => {
    const buf = new Float32Array(12).fill(1);
    buf[1] = Number.NaN; // outside the view
    expect(() => f32(buf.subarray(3, 10), 'v')).not.toThrow();
    buf[8] = 2e6;
    expect(() => f32(buf.subarray(3, 10), 'v')).toThrow(/magnitude at most 1000000 in v but element 5 is 2000000/);
  });
});
