import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadNpy, readNpy, writeNpy } from '../lib';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'gocor-npy-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

// A version-1.0 .npy built by hand, byte for byte as numpy.save writes it.
function handMade(descr: string, shape: string, payload: Buffer, fortran = 'False'): Buffer {
  let header = `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;
  header += `${' '.repeat(64 - ((10 + header.length + 1) % 64))}\n`;
  const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 255, header.length >> 8]);
  return Buffer.concat([pre, Buffer.from(header, 'latin1'), payload]);
}

describe('npy: smoke', () => {
  it('round-trips float32 and float64 arrays exactly', async () => {
    const f32 = Float32Array.from({ length: 24 }, (_, i) => i * 0.25 - 3);
    const f64 = Float64Array.from({ length: 6 }, (_, i) => Math.PI * i);
    await writeNpy(path.join(dir, 'a.npy'), f32, [2, 3, 4]);
    await writeNpy(path.join(dir, 'b.npy'), f64, [6]);
    const a = await readNpy(path.join(dir, 'a.npy'));
    expect(a.dtype).toBe('float32');
    expect(a.shape).toEqual([2, 3, 4]);
    expect(Array.from(a.data)).toEqual(Array.from(f32));
    const b = await readNpy(path.join(dir, 'b.npy'));
    expect([b.dtype, b.shape]).toEqual(['float64', [6]]);
    expect(Array.from(b.data)).toEqual(Array.from(f64));
  });
});

describe('npy: bad input', () => {
  it('rejects other dtypes, Fortran order, truncation and wrong magic with ERR_GOCOR_IO', async () => {
    const four = Buffer.alloc(16);
    await expect(readNpy(handMade('<i4', '(4,)', four))).rejects.toThrow(/dtype <i4 is not supported/);
    await expect(readNpy(handMade('>f4', '(4,)', four))).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    await expect(readNpy(handMade('<f4', '(2, 2)', four, 'True'))).rejects.toThrow(/Fortran order/);
    await expect(readNpy(handMade('<f4', '(5,)', four))).rejects.toThrow(/expected 20 data bytes/);
    await expect(readNpy(Buffer.from('PK\x03\x04 not npy'))).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    await expect(readNpy(path.join(dir, 'missing.npy'))).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    await expect(writeNpy(path.join(dir, 'c.npy'), new Float32Array(5), [2, 3])).rejects.toMatchObject({
      code: 'ERR_GOCOR_SHAPE',
    });
  });
  it('loadNpy refuses ranks other than 3 and 4', async () => {
    await writeNpy(path.join(dir, 'r2.npy'), new Float32Array(6), [2, 3]);
    await expect(loadNpy(path.join(dir, 'r2.npy'))).rejects.toMatchObject({ code: 'ERR_GOCOR_SHAPE' });
  });
});

describe('npy: shapes', () => {
  it('loadNpy: (C,H,W) and (B,C,H,W) become FeatureMaps; float64 is converted to float32', async () => {
    await writeNpy(path.join(dir, 'f3.npy'), new Float64Array(2 * 3 * 5).fill(0.1), [2, 3, 5]);
    const m = await loadNpy(path.join(dir, 'f3.npy'));
    expect([m.batch, m.channels, m.height, m.width]).toEqual([1, 2, 3, 5]);
    expect(m.data).toBeInstanceOf(Float32Array);
    expect(m.data[7]).toBe(Math.fround(0.1));
    await writeNpy(path.join(dir, 'f4.npy'), new Float32Array(2 * 3 * 4 * 1), [2, 3, 4, 1]);
    const m4 = await loadNpy(await readFile(path.join(dir, 'f4.npy')));
    expect([m4.batch, m4.channels, m4.height, m4.width]).toEqual([2, 3, 4, 1]);
  });
});

describe('npy: numerics', () => {
  it('writes the exact bytes numpy.save writes (header padded to 64, little-endian payload)', async () => {
    const data = Float32Array.from([1.5, -2, 3.25]);
    await writeNpy(path.join(dir, 'n.npy'), data, [3]);
    const bytes = await readFile(path.join(dir, 'n.npy'));
    expect(bytes.equals(handMade('<f4', '(3,)', Buffer.from(data.buffer)))).toBe(true);
    expect((bytes.length - 12) % 64).toBe(0);
    // and a hand-made file parses to the same numbers
    const parsed = await readNpy(handMade('<f8', '(1, 2)', Buffer.from(Float64Array.from([0.5, 7]).buffer)));
    expect([parsed.shape, Array.from(parsed.data)]).toEqual([
      [1, 2],
      [0.5, 7],
    ]);
  });
});
