import { describe, expect, it } from 'vitest';
import { correlate, GlobalGOCor, LocalGOCor, l2normalize, loadParams } from '../lib';
import { type ManifestCase, manifest, randn, readF32, worstRatio } from './support/ref';

// Spec section 12: volumes |Δ| <= 2e-5 + 1e-4|expected|, filters |Δ| <= 1e-4 + 1e-4|expected|.
const volTol = (want: Float32Array) => (i: number) => 2e-5 + 1e-4 * Math.abs(want[i] as number);
const filterTol = (want: Float32Array) => (i: number) => 1e-4 + 1e-4 * Math.abs(want[i] as number);

function paramsOf(c: ManifestCase, set: string) {
  const rec: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const [name, t] of Object.entries(c.param_sets[set]!.params))
    rec[name] = { shape: t.shape, data: readF32(t.file) };
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
    expect(
      worstRatio(local.data, plain.data, (i) => 1e-5 + 1e-5 * Math.abs(plain.data[i] as number)).worst,
    ).toBeLessThanOrEqual(1);
  });

  it('diagnostics equal the float64 per-iteration figures of the conformance manifest (α, losses)', async () => {
    for (const c of cases) {
      const fm = (file: string) => ({ data: readF32(file), batch: c.B, channels: c.C, height: c.H, width: c.W });
      for (const set of Object.keys(c.param_sets)) {
        const want = (
          c.param_sets[set] as unknown as {
            diagnostics_per_iteration_spec_f64: Array<Record<string, number | number[]>>;
          }
        ).diagnostics_per_iteration_spec_f64;
        const p = await paramsOf(c, set);
        const K = want.length;
        const m =
          c.kind === 'global'
            ? new GlobalGOCor({ params: p.global!, numIter: K })
            : new LocalGOCor({ params: p.local!, numIter: K });
        const r = await m.correlate(fm(c.files.reference!.file), fm(c.files.query!.file), { diagnostics: true });
        const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
        want.forEach((w, i) => {
          const got = r.diagnostics![i]!;
          expect(got.iter).toBe(i);
          const first = (v: number | number[] | undefined) => (Array.isArray(v) ? (v[0] as number) : (v as number));
          expect(rel(got.lossRef, first(w.loss_ref))).toBeLessThan(1e-4);
          expect(rel(got.lossReg, first(w.loss_reg))).toBeLessThan(1e-4);
          if (c.kind === 'global') {
            expect(rel(got.lossQuery, first(w.loss_query))).toBeLessThan(1e-3);
            expect(rel(got.alpha, first(w.alpha))).toBeLessThan(1e-4);
          } else {
            expect(rel(got.alpha, first(w.alpha_mean))).toBeLessThan(1e-4);
            expect(rel(got.alphaMin, first(w.alpha_min))).toBeLessThan(1e-4);
            expect(rel(got.alphaMax, first(w.alpha_max))).toBeLessThan(1e-4);
          }
        });
      }
    }
  });

  it('l2normalize divides by sqrt(sum_c x^2 + 1e-6) per position (GLU-Net)', () => {
    const x = randn(2 * 3 * 4 * 5, 9);
    const y = l2normalize({ data: x, batch: 2, channels: 3, height: 4, width: 5 });
    expect([y.batch, y.channels, y.height, y.width]).toEqual([2, 3, 4, 5]);
    for (const [b, p] of [
      [0, 0],
      [1, 7],
      [1, 19],
    ] as const) {
      const at = (c: number) => b * 60 + c * 20 + p;
      const n = Math.sqrt([0, 1, 2].reduce((s, c) => s + (x[at(c)] as number) ** 2, 0) + 1e-6);
      for (const c of [0, 1, 2]) expect(y.data[at(c)]).toBeCloseTo((x[at(c)] as number) / n, 6);
    }
  });

  it('rejects different grids for global GOCor with a message that says why', async () => {
    const a = { data: randn(4 * 5 * 5, 1), channels: 4, height: 5, width: 5 };
    const b = { data: randn(4 * 6 * 5, 1), channels: 4, height: 6, width: 5 };
    await expect(new GlobalGOCor().correlate(a, b)).rejects.toThrow(/same grid/);
  });

  it('rejects parameters of the wrong channel count and bad options', async () => {
    const p = await paramsOf(cases.find((c) => c.kind === 'global')!, 'init');
    const a = { data: randn(8 * 4 * 4, 1), channels: 8, height: 4, width: 4 };
    await expect(new GlobalGOCor({ params: p.global! }).correlate(a, a)).rejects.toMatchObject({
      code: 'ERR_GOCOR_SHAPE',
    });
    expect(() => new GlobalGOCor({ numIter: -1 })).toThrow(
      /integer between 0 and 64 for options.numIter but received -1/,
    );
    expect(() => new LocalGOCor({ searchRadius: 0 })).toThrow(/options.searchRadius/);
    expect(() => new LocalGOCor({ bogus: 1 } as never)).toThrow(/Unknown option options.bogus/);
  });
});
