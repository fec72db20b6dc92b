import { describe, expect, it } from 'vitest';
import { GlobalGOCor, LocalGOCor, correlate, l2normalize, loadParams } from '../lib';
import { type ManifestCase, manifest, randn, readF32, worstRatio } from './support/ref';

// Spec section 12: volumes |Δ| <= 2e-5 + 1e-4|expected|, filters |Δ| <= 1e-4 + 1e-4|expected|.
const volTol = (want: Float32Array) => (i: number) => 2e-5 + 1e-4 * Math.abs(want[i] as number);
const filterTol = (want: Float32Array) => (i: number) => 1e-4 + 1e-4 * Math.abs(want[i] as number);

function paramsOf(c: ManifestCase, set: string) {
  const rec: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of Object.entries(c.param_sets[set]!.params)) rec[name] = { shape: t.shape, data: readF32(t.file) };
  return loadParams(rec);
}

const cases = manifest().cases;

describe('GOCor conformance (official vectors)', () => {
  for (const c of cases) {
    const fm = (file: string) => ({ data: readF32(file), batch: c.B, channels: c.C, height: c.H, width: c.W });
    const ref = () => fm(c.files.reference!.file);
    const qry = () => fm(c.files.query!.file);
    for (const set of Object.keys(c.param_sets)) {
      const files = c.param_sets[set]!.files;
      const iters = Object.keys(files)
        .map((k) => /^filter_iter(\d+)$/.exec(k)?.[1])
        .filter((k): k is string => k !== undefined)
        .map(Number);
      for (const K of iters) {
        it(`${c.name}/${set}: K=${K} filter${files[`volume_iter${K}`] || K === 3 ? ' and volume' : ''}`, async () => {
          const p = await paramsOf(c, set);
          const gocor =
            c.kind === 'global'
              ? new GlobalGOCor({ params: p.global!, numIter: K, device: 'cpu' })
              : new LocalGOCor({ params: p.local!, numIter: K, device: 'cpu' });
          const r = await gocor.correlate(ref(), qry(), { returnFilter: true, diagnostics: true });
          const wantF = readF32(files[`filter_iter${K}`]!.file);
          expect(r.filter!.length).toBe(wantF.length);
          expect(worstRatio(r.filter!, wantF, filterTol(wantF)).worst).toBeLessThanOrEqual(1);
          const vfile = files[`volume_iter${K}`] ?? (K === 3 && c.kind === 'global' ? files.volume_final : undefined);
          if (vfile) {
            const wantV = readF32(vfile.file);
            expect(r.shape).toEqual(c.kind === 'global' ? [1, c.H * c.W, c.H, c.W] : [1, 81, c.H, c.W]);
            expect(worstRatio(r.data, wantV, volTol(wantV)).worst).toBeLessThanOrEqual(1);
          }
          expect(r.diagnostics!.length).toBe(K * c.B);
        });
      }
    }
  }
});

describe('GOCor: properties beyond the vectors', () => {
  it('K=0 local GOCor with scaling 1 equals the simple initialiser correlation; K=0 global is w0·g', async () => {
    const C = 8;
    const H = 6;
    const W = 7;
    const f = randn(C * H * W, 1);
    const g = randn(C * H * W, 2);
    const fm = (data: Float32Array) => ({ data, channels: C, height: H, width: W });
    const local = await new LocalGOCor({ numIter: 0 }).correlate(fm(f), fm(g), { returnFilter: true });
    // w0 = f / (mean_c f^2 + 1e-6); volume = Corr(w0, g).
    const w0 = new Float32Array(f.length);
    for (let p = 0; p < H * W; p++) {
      let s = 0;
      for (let c = 0; c < C; c++) s += (f[c * H * W + p] as number) ** 2;
      const d = s / C + 1e-6;
      for (let c = 0; c < C; c++) w0[c * H * W + p] = (f[c * H * W + p] as number) / d;
    }
    expect(worstRatio(local.filter!, w0, (i) => 1e-6 + 1e-5 * Math.abs(w0[i] as number)).worst).toBeLessThanOrEqual(1);
    const plain = await correlate(fm(w0), fm(g), { mode: 'local' });
    expect(worstRatio(local.data, plain.data, (i) => 1e-5 + 1e-5 * Math.abs(plain.data[i] as number)).worst).toBeLessThanOrEqual(1);
  });

  it('GOCor sharpens the match: the true displacement wins more often than with plain correlation', async () => {
    // Query = reference shifted by (1, 2) plus noise, on a repetitive pattern; count argmax hits.
    const C = 16;
    const H = 12;
    const W = 12;
    const base = randn(C * 3 * 3, 5);
    const f = new Float32Array(C * H * W);
    const g = new Float32Array(C * H * W);
    const noise = randn(C * H * W, 6);
    for (let c = 0; c < C; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          f[(c * H + y) * W + x] = (base[(c * 3 + (y % 3)) * 3 + (x % 3)] as number) + 0.3 * (noise[(c * H + y) * W + x] as number);
        }
    for (let c = 0; c < C; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) g[(c * H + y) * W + x] = f[(c * H + ((y - 1 + H) % H)) * W + ((x - 2 + W) % W)] as number;
    const nf = l2normalize({ data: f, channels: C, height: H, width: W });
    const ng = l2normalize({ data: g, channels: C, height: H, width: W });
    const hits = (v: Float32Array) => {
      let n = 0;
      const N = H * W;
      for (let y = 1; y < H - 1; y++)
        for (let x = 0; x < W - 2; x++) {
          const p = y * W + x;
          let best = -1;
          let bi = -1;
          for (let t = 0; t < N; t++) {
            const s = v[t * N + p] as number;
            if (s > best) {
              best = s;
              bi = t;
            }
          }
          if (bi === (y + 1) * W + (x + 2)) n++;
        }
      return n;
    };
    const plain = await correlate(nf, ng);
    const go = await new GlobalGOCor({ numIter: 3 }).correlate(nf, ng);
    expect(hits(go.data)).toBeGreaterThanOrEqual(hits(plain.data));
  });

  it('rejects different grids for global GOCor with a message that says why', async () => {
    const a = { data: randn(4 * 5 * 5, 1), channels: 4, height: 5, width: 5 };
    const b = { data: randn(4 * 6 * 5, 1), channels: 4, height: 6, width: 5 };
    await expect(new GlobalGOCor().correlate(a, b)).rejects.toThrow(/same grid/);
  });

  it('rejects parameters of the wrong channel count and bad options', async () => {
    const p = await paramsOf(cases.find((c) => c.kind === 'global')!, 'init');
    const a = { data: randn(8 * 4 * 4, 1), channels: 8, height: 4, width: 4 };
    await expect(new GlobalGOCor({ params: p.global! }).correlate(a, a)).rejects.toMatchObject({ code: 'ERR_GOCOR_SHAPE' });
    expect(() => new GlobalGOCor({ numIter: -1 })).toThrow(/integer between 0 and 64 for options.numIter but received -1/);
    expect(() => new LocalGOCor({ searchRadius: 0 })).toThrow(/options.searchRadius/);
    expect(() => new LocalGOCor({ bogus: 1 } as never)).toThrow(/Unknown option options.bogus/);
  });
});
