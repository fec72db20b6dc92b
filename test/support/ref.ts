/** Independent float64 references and seeded inputs for the tests. */
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** Deterministic normal(0,1) floats (mulberry32 + Box-Muller). */
export function randn(n: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(next(), 1e-12);
    out[i] = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * next());
  }
  return out;
}

/** Global correlation in float64: out[b, qy*Wq+qx, y, x] = sum_c r[b,c,y,x] q[b,c,qy,qx]; also sum_c |r q| per element. */
export function corrGlobal64(
  r: Float32Array,
  q: Float32Array,
  B: number,
  C: number,
  H: number,
  W: number,
  Hq: number,
  Wq: number,
) {
  const N = H * W;
  const M = Hq * Wq;
  const out = new Float64Array(B * M * N);
  const mag = new Float64Array(B * M * N);
  for (let b = 0; b < B; b++)
    for (let t = 0; t < M; t++)
      for (let p = 0; p < N; p++) {
        let s = 0;
        let m = 0;
        for (let c = 0; c < C; c++) {
          const v = (r[(b * C + c) * N + p] as number) * (q[(b * C + c) * M + t] as number);
          s += v;
          m += Math.abs(v);
        }
        out[(b * M + t) * N + p] = s;
        mag[(b * M + t) * N + p] = m;
      }
  return { out, mag };
}

/** Local correlation in float64 (divided by C, zero outside), layout (B, (2R+1)^2, H, W). */
export function corrLocal64(r: Float32Array, q: Float32Array, B: number, C: number, H: number, W: number, R: number) {
  const S = 2 * R + 1;
  const D = S * S;
  const N = H * W;
  const out = new Float64Array(B * D * N);
  const mag = new Float64Array(B * D * N);
  for (let b = 0; b < B; b++)
    for (let dy = -R; dy <= R; dy++)
      for (let dx = -R; dx <= R; dx++) {
        const k = (dy + R) * S + (dx + R);
        for (let y = 0; y < H; y++)
          for (let x = 0; x < W; x++) {
            const yy = y + dy;
            const xx = x + dx;
            if (yy < 0 || yy >= H || xx < 0 || xx >= W) continue;
            let s = 0;
            let m = 0;
            for (let c = 0; c < C; c++) {
              const v = (r[(b * C + c) * N + y * W + x] as number) * (q[(b * C + c) * N + yy * W + xx] as number);
              s += v;
              m += Math.abs(v);
            }
            out[(b * D + k) * N + y * W + x] = s / C;
            mag[(b * D + k) * N + y * W + x] = m / C;
          }
      }
  return { out, mag };
}

/**
 * Largest violation of |got - want| <= bound(i); returns the worst ratio (<= 1 passes) and where.
 * float32 dot products of length C, accumulated in any order with FMA, err at most ~C·u·Σ|a_c b_c|
 * (u = 2^-24); we use the tighter, practically safe sqrt(C)-free bound 4·u·log2(C+1)... see callers.
 */
export function worstRatio(got: ArrayLike<number>, want: ArrayLike<number>, bound: (i: number) => number) {
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const r = Math.abs((got[i] as number) - (want[i] as number)) / bound(i);
    if (!(r <= worst)) {
      worst = r;
      at = i;
    }
  }
  return { worst, at };
}

export const REPO = path.join(__dirname, '..', '..');
export const CONFORMANCE = process.env.GOCOR_CONFORMANCE_DIR ?? path.join(REPO, 'test', 'fixtures', 'conformance');

export function readF32(file: string): Float32Array {
  const buf = readFileSync(path.join(CONFORMANCE, file));
  const out = new Float32Array(buf.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = buf.readFloatLE(i * 4);
  return out;
}

export interface ManifestTensor {
  file: string;
  shape: number[];
}
export interface ManifestCase {
  name: string;
  kind: 'global' | 'local';
  B: number;
  C: number;
  H: number;
  W: number;
  files: Record<string, ManifestTensor>;
  param_sets: Record<string, { params: Record<string, ManifestTensor>; files: Record<string, ManifestTensor> }>;
}

export function manifest(): { cases: ManifestCase[] } {
  return JSON.parse(readFileSync(path.join(CONFORMANCE, 'manifest.json'), 'utf8'));
}
