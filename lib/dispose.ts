/** Releasing a result's memory now rather than at V8's next collection. */
import { native } from './native';
import { invalid } from './validate';

/**
 * Gives the memory of arrays gocor returned back at once: each value is a typed array gocor
 * returned (a volume's `data`, a flow, a confidence map, ...) or a result object holding them (a
 * Volume, a GocorResult, a MatchResult; their own properties are searched three levels deep).
 * Each such array is detached: from then on it is empty (length 0) for every view of it, and its
 * memory goes back to gocor's pool right away instead of when V8 next collects the result. Use it
 * on results under 64 MiB that you are done with when you make many calls in a row: V8 starts a
 * full collection for every ~64 MiB of arrays made, and for 4 MiB volumes those passes cost about
 * a tenth of each call (README "Limits and failure behaviour"); a larger array starts one as it is
 * made, disposed or not. Arrays that gocor did not make are never touched: a
 * typed array passed directly must be one of gocor's (else ERR_GOCOR_INVALID_ARG), and a result
 * object must hold at least one. Disposing an array twice does nothing the second time.
 * Returns the number of bytes released by this call.
 */
export function dispose(...values: unknown[]): number {
  const n = native();
  let bytes = 0;
  values.forEach((value, i) => {
    const name = values.length === 1 ? 'value' : `values[${i}]`;
    if (ArrayBuffer.isView(value)) {
      const r = n.dispose(value);
      if (r < 0) throw invalid('an array gocor returned', name, value);
      bytes += r;
      return;
    }
    const arrays: ArrayBufferView[] = [];
    if (typeof value === 'object' && value !== null) collect(value, 3, arrays);
    let found = false;
    for (const a of arrays) {
      const r = n.dispose(a);
      if (r < 0) continue; // the caller's own array: left as it is
      found = true;
      bytes += r;
    }
    if (!found) throw invalid('an array gocor returned or a result holding one', name, value);
  });
  return bytes;
}

function collect(o: object, depth: number, out: ArrayBufferView[]): void {
  for (const v of Object.values(o)) {
    if (ArrayBuffer.isView(v)) out.push(v);
    else if (depth > 1 && typeof v === 'object' && v !== null) collect(v, depth - 1, out);
  }
}
