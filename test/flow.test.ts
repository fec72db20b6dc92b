import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Flow, flowMetrics, flowToColor, type Image, readFlo, resizeFlow, warpImage, writeFlo } from '../lib';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'gocor-flow-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function randomFlow(w: number, h: number, seed: number): Flow {
  let s = seed;
  const rnd = () => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31 - 0.5;
  };
  const data = new Float32Array(2 * w * h);
  for (let i = 0; i < data.length; i++) data[i] = rnd() * 40;
  return { data, width: w, height: h };
}

describe('flow: smoke', () => {
  it('.flo round trip is exact and the file layout is Middlebury (PIEH, w, h, interleaved u v)', async () => {
    const f = randomFlow(7, 5, 3);
    const file = path.join(dir, 'a.flo');
    await writeFlo(file, f);
    const bytes = await readFile(file);
    expect(bytes.length).toBe(12 + 8 * 35);
    expect(bytes.toString('latin1', 0, 4)).toBe('PIEH');
    expect([bytes.readInt32LE(4), bytes.readInt32LE(8)]).toEqual([7, 5]);
    // Pixel (y=2, x=3): u at 12 + 8*(2*7+3), v right after.
    expect(bytes.readFloatLE(12 + 8 * 17)).toBe(f.data[17]);
    expect(bytes.readFloatLE(16 + 8 * 17)).toBe(f.data[35 + 17]);
    const back = await readFlo(file);
    expect([back.width, back.height]).toEqual([7, 5]);
    expect(Array.from(back.data)).toEqual(Array.from(f.data));
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });
});

describe('flow: bad input', () => {
  it('rejects malformed files and flows', async () => {
    await expect(readFlo(Buffer.from('not a flow file at all'))).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    await expect(readFlo(path.join(dir, 'missing.flo'))).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    const f = randomFlow(4, 4, 1);
    const bytes = Buffer.alloc(12 + 8 * 16);
    bytes.writeFloatLE(202021.25, 0);
    bytes.writeInt32LE(4, 4);
    bytes.writeInt32LE(5, 8);
    await expect(readFlo(bytes)).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    await expect(writeFlo(path.join(dir, 'x.flo'), { ...f, width: 5 })).rejects.toMatchObject({
      code: 'ERR_GOCOR_SHAPE',
    });
    await expect(flowToColor(f, { maxFlow: -1 })).rejects.toThrow(/options.maxFlow/);
    expect(() => flowMetrics(f, randomFlow(4, 3, 1))).toThrow(/flow is 4x4 but gt is 4x3/);
    const img: Image = { data: new Float32Array(16), channels: 1, height: 4, width: 4 };
    const nan = new Float32Array(32).fill(Number.NaN);
    await expect(warpImage(img, { data: nan, width: 4, height: 4 })).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
    });
  });
});

describe('flow: shapes', () => {
  it('resizeFlow scales vectors with the size; warpImage keeps b channels on a grid', async () => {
    const f: Flow = { data: new Float32Array(2 * 8 * 4).fill(2, 0, 32).fill(-4, 32), width: 8, height: 4 };
    const r = await resizeFlow(f, { width: 16, height: 2 });
    expect([r.width, r.height, r.data.length]).toEqual([16, 2, 64]);
    expect(r.data[5]).toBeCloseTo(4, 6);
    expect(r.data[32 + 5]).toBeCloseTo(-2, 6);
    const b: Image = { data: new Float32Array(3 * 6 * 9), channels: 3, height: 6, width: 9 };
    const w = await warpImage(b, f);
    expect([w.channels, w.height, w.width, w.data.length, w.valid.length]).toEqual([3, 4, 8, 96, 32]);
  });
});

describe('flow: numerics', () => {
  it('warpImage equals a float64 bilinear reference; outside points are 0 with valid 0', async () => {
    const W = 20;
    const H = 15;
    const b: Image = { data: new Float32Array(2 * H * W), channels: 2, height: H, width: W };
    for (let i = 0; i < b.data.length; i++) b.data[i] = Math.sin(i * 0.37) + 0.1 * (i % 7);
    const f = randomFlow(W, H, 11);
    for (let i = 0; i < f.data.length; i++) f.data[i] = (f.data[i] as number) / 8; // +-2.5 px
    const w = await warpImage(b, f);
    const n = W * H;
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const i = y * W + x;
        const sx = x + (f.data[i] as number);
        const sy = y + (f.data[n + i] as number);
        const inside = sx >= -0.5 && sx <= W - 0.5 && sy >= -0.5 && sy <= H - 0.5;
        expect(w.valid[i]).toBe(inside ? 1 : 0);
        for (let c = 0; c < 2; c++) {
          let ref = 0;
          if (inside) {
            const cx = Math.min(Math.max(sx, 0), W - 1);
            const cy = Math.min(Math.max(sy, 0), H - 1);
            const x0 = Math.min(Math.floor(cx), W - 2);
            const y0 = Math.min(Math.floor(cy), H - 2);
            const fx = cx - x0;
            const fy = cy - y0;
            const p = (yy: number, xx: number) => b.data[c * n + yy * W + xx] as number;
            ref =
              (1 - fy) * ((1 - fx) * p(y0, x0) + fx * p(y0, x0 + 1)) +
              fy * ((1 - fx) * p(y0 + 1, x0) + fx * p(y0 + 1, x0 + 1));
          }
          expect(Math.abs((w.data[c * n + i] as number) - ref)).toBeLessThan(1e-5);
        }
      }
    }
  });

  it('warp consistency: warping b by a constant integer flow is the exact shifted image', async () => {
    const W = 32;
    const H = 24;
    const b: Image = { data: new Float32Array(H * W), channels: 1, height: H, width: W };
    for (let i = 0; i < b.data.length; i++) b.data[i] = ((i * 7919) % 101) / 101;
    const f: Flow = { data: new Float32Array(2 * H * W).fill(3, 0, H * W).fill(-2, H * W), width: W, height: H };
    const w = await warpImage(b, f);
    for (let y = 2; y < H; y++)
      for (let x = 0; x < W - 3; x++) expect(w.data[y * W + x]).toBe(b.data[(y - 2) * W + x + 3]);
  });

  it('flowMetrics: AEPE and PCK against hand-computed values, skipping invalid and unknown pixels', () => {
    const gt: Flow = { data: new Float32Array([0, 0, 0, 0, 0, 0, 0, 2e9]), width: 4, height: 1 };
    // errors: 0.5, 2 (3-4-5 scaled), 6, masked, ...; pixel 3 has an unknown gt v.
    const f: Flow = { data: new Float32Array([0.5, 1.2, 6, 9, 0, 1.6, 0, 0]), width: 4, height: 1 };
    const m = flowMetrics(f, gt);
    expect(m.count).toBe(3);
    expect(m.aepe).toBeCloseTo((0.5 + 2 + 6) / 3, 6);
    expect([m.pck1, m.pck3, m.pck5]).toEqual([1 / 3, 2 / 3, 2 / 3]);
    const masked = flowMetrics(f, gt, [1, 0, 1, 1]);
    expect(masked.count).toBe(2);
    expect(masked.aepe).toBeCloseTo(3.25, 6);
  });

  it('flowToColor: Middlebury wheel (zero white, +u red, -u cyan-blue, +v orange), darker beyond maxFlow', async () => {
    const f: Flow = { data: new Float32Array([0, 1, -1, 0, 2, 0, 0, 0, 1, 0]), width: 5, height: 1 };
    const png = await flowToColor(f, { maxFlow: 1 });
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([5, 1, 3]);
    const px = (i: number) => Array.from(data.subarray(3 * i, 3 * i + 3));
    expect(px(0)).toEqual([255, 255, 255]);
    // +u: wheel position 0, pure red.
    expect(px(1)).toEqual([255, 0, 0]);
    // -u: wheel position 27 of 0..54 = cyan-blue ramp step 2 of 11: (0, 255 (1 - 2/11), 255).
    expect(px(2)).toEqual([0, 209, 255]);
    // +v (down): wheel position 13.5, red-yellow ramp: (255, 255 (13.5 / 15), 0).
    expect(px(3)).toEqual([255, 230, 0]);
    // magnitude 2 > maxFlow 1: the +u colour times 0.75.
    expect(px(4)).toEqual([191, 0, 0]);
  });
});
