import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  backends,
  extractFeatures,
  type Flow,
  flowMetrics,
  type Image,
  loadImage,
  match,
  matchFeatures,
  resizeFlow,
} from '../lib';

const EX = path.join(__dirname, '..', 'examples');

// A size x size gray crop of `src` whose top-left corner is (x0, y0).
function crop(src: Image, x0: number, y0: number, size: number): Image {
  const data = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) data[y * size + x] = src.data[(y + y0) * src.width + x + x0] as number;
  }
  return { data, channels: 1, height: size, width: size };
}

// Flow with the same constant vector everywhere.
function constantFlow(u: number, v: number, size: number): Flow {
  const data = new Float32Array(2 * size * size);
  data.fill(u, 0, size * size);
  data.fill(v, size * size);
  return { data, width: size, height: size };
}

// 1 inside, 0 within `margin` pixels of the border.
function interior(size: number, margin: number): Uint8Array {
  const m = new Uint8Array(size * size);
  for (let y = margin; y < size - margin; y++) for (let x = margin; x < size - margin; x++) m[y * size + x] = 1;
  return m;
}

let astro: Image;
beforeAll(async () => {
  astro = await loadImage(path.join(EX, 'astronaut.png'), { gray: true });
});

describe('match: smoke', () => {
  it('identity pair -> near-zero flow with confidence, on the grid of a', async () => {
    const a = crop(astro, 128, 96, 256);
    const f = await match(a, a, { threads: 2 });
    expect([f.width, f.height, f.data.length, f.confidence?.length]).toEqual([256, 256, 2 * 256 * 256, 256 * 256]);
    expect(f.device).toBe('cpu');
    const m = flowMetrics(f, constantFlow(0, 0, 256), interior(256, 16));
    expect(medianError(f, constantFlow(0, 0, 256), interior(256, 16))).toBeLessThan(0.1);
    expect(m.pck1).toBeGreaterThan(0.9);
  });
});

describe('match: bad input', () => {
  const img: Image = { data: new Float32Array(3 * 32 * 32), channels: 3, height: 32, width: 32 };
  it('rejects bad options with the option name and value', async () => {
    await expect(match(img, img, { method: 'sift' as 'gocor' })).rejects.toThrow(
      /Expected one of 'gocor', 'correlation' for options.method but received "sift"/,
    );
    await expect(match(img, img, { globalSize: 3 })).rejects.toMatchObject({ code: 'ERR_GOCOR_INVALID_ARG' });
    await expect(match(img, img, { finestStride: 3 })).rejects.toThrow(/power of two/);
    await expect(match(img, img, { numIter: { global: 1, locale: 2 } as never })).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
    });
    await expect(match(img, img, { outputShape: { width: 0, height: 5 } })).rejects.toThrow(
      /options.outputShape.width/,
    );
    await expect(match(img, img, { bogus: 1 } as never)).rejects.toThrow(/Unknown option options.bogus/);
    await expect(match(img, img, { gocorParams: 'trained' as 'fitted' })).rejects.toThrow(
      /Expected one of 'fitted', 'initial' for options.gocorParams but received "trained"/,
    );
    await expect(match(img, img, { similaritySearch: true as false })).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
      message: expect.stringMatching(/options.similaritySearch.*true/),
    });
  });
  it('rejects malformed images and mixed inputs', async () => {
    await expect(match({ ...img, data: new Float32Array(5) }, img)).rejects.toMatchObject({ code: 'ERR_GOCOR_SHAPE' });
    await expect(match({ ...img, channels: 7 }, img)).rejects.toMatchObject({ code: 'ERR_GOCOR_INVALID_ARG' });
    await expect(match('/nonexistent/x.png', img)).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    const pyr = await extractFeatures(img);
    await expect(match(pyr, img)).rejects.toMatchObject({ code: 'ERR_GOCOR_INVALID_ARG' });
    const fm = { data: new Float32Array(4 * 8 * 8), channels: 4, height: 8, width: 8 };
    await expect(matchFeatures(fm, { ...fm, channels: 2, data: new Float32Array(2 * 64) })).rejects.toMatchObject({
      code: 'ERR_GOCOR_SHAPE',
    });
  });
  it('rejects cuda without a GPU', async () => {
    if (backends().cuda.available) return;
    await expect(match(img, img, { device: 'cuda' })).rejects.toMatchObject({ code: 'ERR_GOCOR_CUDA_UNAVAILABLE' });
  });
});

describe('match: shapes', () => {
  it('extractFeatures: global level then strides down to 4, unit-norm cells', async () => {
    const p = await extractFeatures(crop(astro, 0, 0, 256), { globalSize: 16 });
    expect(p.levels.map((l) => [l.global, l.height, l.width, l.channels])).toEqual([
      [true, 16, 16, 136],
      [false, 32, 32, 136],
      [false, 64, 64, 136],
    ]);
    // Local strides: powers of two from <= 0.75 global cell (16 px -> 8) down to 4.
    expect(p.levels.map((l) => l.strideX)).toEqual([16, 8, 4]);
    const l = p.levels[2] as (typeof p.levels)[number];
    const N = l.height * l.width;
    for (const n of [0, 1000, N - 1]) {
      let s = 0;
      for (let c = 0; c < l.channels; c++) s += (l.data[c * N + n] as number) ** 2;
      expect(s).toBeCloseTo(1, 4);
    }
  });
  it('outputShape resizes the flow and rescales the vectors', async () => {
    const a = crop(astro, 100, 100, 192);
    const b = crop(astro, 106, 97, 192);
    const full = await match(a, b, { method: 'correlation', confidence: 'none' });
    expect(full.confidence).toBeUndefined();
    const half = await match(a, b, { method: 'correlation', outputShape: { width: 96, height: 64 } });
    expect([half.width, half.height, half.confidence?.length]).toEqual([96, 64, 96 * 64]);
    const resized = await resizeFlow(full, { width: 96, height: 64 });
    for (let i = 0; i < resized.data.length; i++) expect(half.data[i]).toBeCloseTo(resized.data[i] as number, 4);
    // a(x) = b(x + (-6, 3)): at 96 x 64 (half width, a third of the height) that is (-3, 1).
    const gt = { data: new Float32Array(2 * 96 * 64).fill(-3, 0, 96 * 64).fill(1, 96 * 64), width: 96, height: 64 };
    expect(medianError(half, gt, interior2(96, 64, 8))).toBeLessThan(0.3);
  });
});

describe('match: numerics', () => {
  // a = S at offset (x0, y0), b = S at (x0 + dx, y0 + dy): a(x) = b(x - (dx, dy)), so flow = (-dx, -dy).
  it.each([
    ['gocor', 'fitted'],
    ['gocor', 'initial'],
    ['correlation', 'fitted'],
  ] as const)('recovers an integer shift exactly (%s, %s GOCor parameters)', async (method, gocorParams) => {
    const a = crop(astro, 120, 110, 256);
    const b = crop(astro, 120 - 23, 110 + 11, 256);
    const f = await match(a, b, { method, gocorParams });
    const gt = constantFlow(23, -11, 256);
    expect(medianError(f, gt, interior(256, 32))).toBeLessThan(0.02);
    expect(flowMetrics(f, gt, interior(256, 32)).pck1).toBeGreaterThan(0.99);
  });

  it('integer shift over a flat (saturated) area: the flow of the textured parts reaches it', async () => {
    // a = S at (7, 3), b = S at (0, 0) over almost the whole image: flow (7, 3) on the overlap,
    // which includes the suit's saturated white, where any nearby flow fits the pixels exactly.
    const size = 504;
    const f = await match(crop(astro, 7, 3, size), crop(astro, 0, 0, size));
    const n = size * size;
    let within = 0;
    let count = 0;
    for (let y = 0; y < size - 3; y++) {
      for (let x = 0; x < size - 7; x++) {
        const i = y * size + x;
        count++;
        if (Math.hypot((f.data[i] as number) - 7, (f.data[n + i] as number) - 3) < 0.1) within++;
      }
    }
    // 99.996 %. Without the final fill's flat-pixel rule (MatchOptions::flat_gradient) 97.9 %, and
    // without the flat tie rule of the DIS propagation (dis_propagation_rule) too 95.3 %.
    expect(within / count).toBeGreaterThan(0.99);
  });

  it('recovers a known homography to sub-pixel accuracy in the interior', async () => {
    // b(y) = S(Hinv y): a = S crop, b = its image under a mild projective warp; flow(x) = H(x) - x.
    const size = 256;
    const x0 = 128;
    const y0 = 128;
    const H = [1.04, 0.03, -6, -0.02, 0.98, 5, 4e-5, -3e-5, 1];
    const inv = invert3(H);
    const map = (M: number[], x: number, y: number) => {
      const w = (M[6] as number) * x + (M[7] as number) * y + (M[8] as number);
      return [
        ((M[0] as number) * x + (M[1] as number) * y + (M[2] as number)) / w,
        ((M[3] as number) * x + (M[4] as number) * y + (M[5] as number)) / w,
      ] as const;
    };
    const a = crop(astro, x0, y0, size);
    const b = new Float32Array(size * size);
    const gt = new Float32Array(2 * size * size);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const [sx, sy] = map(inv, x, y);
        b[y * size + x] = bilinear(astro, sx + x0, sy + y0);
        const [u, v] = map(H, x, y);
        gt[y * size + x] = u - x;
        gt[size * size + y * size + x] = v - y;
      }
    }
    const f = await match(a, { data: b, channels: 1, height: size, width: size });
    const g = { data: gt, width: size, height: size };
    const m = flowMetrics(f, g, interior(size, 32));
    expect(medianError(f, g, interior(size, 32))).toBeLessThan(0.75);
    expect(m.pck3).toBeGreaterThan(0.9);
  });

  it('large rotation and zoom: b = a rotated by 90 degrees and zoomed 2x, found by the similarity search', async () => {
    // M(x) = 2 Rot90 (x - c) + c + (6, -4) maps a to b; b(y) = S(M^-1(y)) (b shows a's centre
    // quarter, magnified); flow(x) = M(x) - x where M(x) lies in b.
    const size = 384;
    const x0 = 64;
    const y0 = 64;
    const c = (size - 1) / 2;
    const M = (x: number, y: number) => [-2 * (y - c) + c + 6, 2 * (x - c) + c - 4] as const;
    const Mi = (u: number, v: number) => [(v - c + 4) / 2 + c, -(u - c - 6) / 2 + c] as const;
    const a = crop(astro, x0, y0, size);
    const b = new Float32Array(size * size);
    const gt = new Float32Array(2 * size * size);
    const overlap = new Uint8Array(size * size);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const [sx, sy] = Mi(x, y);
        b[y * size + x] = bilinear(astro, sx + x0, sy + y0);
        const [u, v] = M(x, y);
        gt[y * size + x] = u - x;
        gt[size * size + y * size + x] = v - y;
        // the overlap, 8 px of b away from b's border
        overlap[y * size + x] = u >= 8 && v >= 8 && u <= size - 9 && v <= size - 9 ? 1 : 0;
      }
    }
    const B: Image = { data: b, channels: 1, height: size, width: size };
    const f = await match(a, B);
    const g = { data: gt, width: size, height: size };
    expect(f.timings?.similarity).toBeGreaterThan(0);
    expect(medianError(f, g, overlap)).toBeLessThan(0.5);
    expect(flowMetrics(f, g, overlap).pck1).toBeGreaterThan(0.9);
    // Without the search the pipeline cannot follow it.
    const off = await match(a, B, { similaritySearch: false });
    expect(off.timings?.similarity).toBeUndefined();
    expect(flowMetrics(off, g, overlap).pck5).toBeLessThan(0.5);
  });

  it('similarity search on an ordinary pair: b as it is wins, the flow is the same as without it', async () => {
    const a = crop(astro, 120, 110, 256);
    const b = crop(astro, 120 - 23, 110 + 11, 256);
    const off = await match(a, b, { similaritySearch: false });
    const always = await match(a, b, { similaritySearch: 'always' });
    expect(always.timings?.similarity).toBeGreaterThan(0);
    expect(Buffer.from(always.data.buffer).equals(Buffer.from(off.data.buffer))).toBe(true);
    // 'auto': the coarse flows agree, no search
    expect((await match(a, b)).timings?.similarity).toBeUndefined();
  });

  it('identity: every pixel within 0.05 px of zero flow, no occlusion, at every quality', async () => {
    const a = crop(astro, 128, 96, 256);
    for (const quality of ['fast', 'balanced', 'best'] as const) {
      const f = await match(a, a, { quality });
      let within = 0;
      let worst = 0;
      const n = 256 * 256;
      for (let i = 0; i < n; i++) {
        const e = Math.hypot(f.data[i] as number, f.data[n + i] as number);
        if (e < 0.05) within++;
        worst = Math.max(worst, e);
      }
      expect(within / n).toBeGreaterThanOrEqual(0.999);
      expect(worst).toBeLessThan(0.5);
      if (quality !== 'fast') expect(f.occlusion?.reduce((s, v) => s + v, 0)).toBe(0);
    }
  });

  it('sub-pixel translation: median error under 0.08 px (DIS refinement)', async () => {
    // b(x) = S(x + x0 - 5.3, y + y0 + 2.6) (bilinear), a = S crop: a(x) = b(x + (5.3, -2.6)).
    const size = 224;
    const x0 = 140;
    const y0 = 120;
    const a = crop(astro, x0, y0, size);
    const b = new Float32Array(size * size);
    for (let y = 0; y < size; y++)
      for (let x = 0; x < size; x++) b[y * size + x] = bilinear(astro, x + x0 - 5.3, y + y0 + 2.6);
    const f = await match(a, { data: b, channels: 1, height: size, width: size }, { confidence: 'none' });
    const gt = constantFlow(5.3, -2.6, size);
    // b is a bilinear resampling (a low-pass) of the source while a is not: 0.06 px is that bias.
    expect(medianError(f, gt, interior(size, 24))).toBeLessThan(0.08);
    expect(flowMetrics(f, gt, interior(size, 24)).pck1).toBeGreaterThan(0.97);
  });

  it('occlusion: the background a moving square covers in b is flagged, and little else', async () => {
    // Background: the astronaut crop shifted by (2, 1) between a and b; a 64 x 64 square of another
    // crop (the foreground, textured suit) at (80, 90) in a and at (80 + 24, 90 + 6) in b.
    // Background pixels of a that the square covers in b are occluded.
    const size = 256;
    const bg = crop(astro, 40, 60, size + 8);
    const fg = crop(astro, 230, 400, 64);
    const [fx, fy, dx, dy, bx, by] = [80, 90, 24, 6, 2, 1];
    const render = (sx: number, sy: number, ox: number, oy: number) => {
      const d = new Float32Array(size * size);
      for (let y = 0; y < size; y++)
        for (let x = 0; x < size; x++) {
          const inFg = x >= sx && x < sx + 64 && y >= sy && y < sy + 64;
          d[y * size + x] = inFg
            ? (fg.data[(y - sy) * 64 + (x - sx)] as number)
            : (bg.data[(y + 4 - oy) * (size + 8) + (x + 4 - ox)] as number);
        }
      return { data: d, channels: 1, height: size, width: size };
    };
    const a = render(fx, fy, 0, 0);
    const b = render(fx + dx, fy + dy, bx, by);
    const f = await match(a, b);
    expect(f.occlusion?.length).toBe(size * size);
    const occ = f.occlusion as Uint8Array;
    let occluded = 0;
    let flagged = 0;
    let visible = 0;
    let falseFlags = 0;
    for (let y = 8; y < size - 8; y++)
      for (let x = 8; x < size - 8; x++) {
        const i = y * size + x;
        const inA = x >= fx && x < fx + 64 && y >= fy && y < fy + 64;
        const tx = x + bx;
        const ty = y + by;
        const coveredInB = tx >= fx + dx && tx < fx + dx + 64 && ty >= fy + dy && ty < fy + dy + 64;
        if (inA) continue;
        // Ignore a 3 px band around the square's outlines, where a 5 px patch straddles both layers.
        const near = (X: number, Y: number, x0: number, y0: number) =>
          X >= x0 - 3 &&
          X < x0 + 67 &&
          Y >= y0 - 3 &&
          Y < y0 + 67 &&
          !(X >= x0 + 3 && X < x0 + 61 && Y >= y0 + 3 && Y < y0 + 61);
        if (near(x, y, fx, fy) || near(tx, ty, fx + dx, fy + dy)) continue;
        if (coveredInB) {
          occluded++;
          flagged += occ[i] as number;
        } else {
          visible++;
          falseFlags += occ[i] as number;
        }
      }
    expect(occluded).toBeGreaterThan(500);
    expect(flagged / occluded).toBeGreaterThan(0.75);
    expect(falseFlags / visible).toBeLessThan(0.02);
  });

  it('matchFeatures: caller feature maps, flow in feature cells', async () => {
    // Features of the shifted pair at stride 4; the 24 x -12 px shift is 6 x -3 cells.
    const a = crop(astro, 120, 110, 256);
    const b = crop(astro, 96, 122, 256);
    const [pa, pb] = await Promise.all([extractFeatures(a), extractFeatures(b)]);
    const fa = pa.levels[pa.levels.length - 1] as (typeof pa.levels)[number];
    const fb = pb.levels[pb.levels.length - 1] as (typeof pb.levels)[number];
    const f = await matchFeatures(fa, fb, { globalSize: 16 });
    expect([f.width, f.height]).toEqual([64, 64]);
    expect(medianError(f, constantFlow(6, -3, 64), interior(64, 8))).toBeLessThan(0.25);
  });
});

// Median end-point error over the masked pixels (robust to the few outliers a matcher may have).
function medianError(f: Flow, gt: Flow, mask: Uint8Array): number {
  const n = f.width * f.height;
  const e: number[] = [];
  for (let i = 0; i < n; i++) {
    if (mask[i])
      e.push(
        Math.hypot(
          (f.data[i] as number) - (gt.data[i] as number),
          (f.data[n + i] as number) - (gt.data[n + i] as number),
        ),
      );
  }
  e.sort((x, y) => x - y);
  return e[e.length >> 1] as number;
}

function interior2(w: number, h: number, margin: number): Uint8Array {
  const m = new Uint8Array(w * h);
  for (let y = margin; y < h - margin; y++) for (let x = margin; x < w - margin; x++) m[y * w + x] = 1;
  return m;
}

function bilinear(img: Image, x: number, y: number): number {
  const W = img.width;
  const x0 = Math.max(0, Math.min(W - 2, Math.floor(x)));
  const y0 = Math.max(0, Math.min(img.height - 2, Math.floor(y)));
  const fx = x - x0;
  const fy = y - y0;
  const p = (yy: number, xx: number) => img.data[yy * W + xx] as number;
  return (
    (1 - fy) * ((1 - fx) * p(y0, x0) + fx * p(y0, x0 + 1)) + fy * ((1 - fx) * p(y0 + 1, x0) + fx * p(y0 + 1, x0 + 1))
  );
}

function invert3(m: number[]): number[] {
  const [a, b, c, d, e, f, g, h, i] = m as [number, number, number, number, number, number, number, number, number];
  const A = e * i - f * h;
  const B = -(d * i - f * g);
  const C = d * h - e * g;
  const det = a * A + b * B + c * C;
  return [
    A,
    -(b * i - c * h),
    b * f - c * e,
    B,
    a * i - c * g,
    -(a * f - c * d),
    C,
    -(a * h - b * g),
    a * e - b * d,
  ].map((v) => v / det);
}
