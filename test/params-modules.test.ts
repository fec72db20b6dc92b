// The modules take what loadParams returns (issue 14, item 6) and match takes numIter as a number (item 7).
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import {
  GlobalGOCor,
  type GocorParams,
  type Image,
  LocalGOCor,
  loadImage,
  loadParams,
  match,
  saveParams,
} from '../lib';

const CKPT = path.join(__dirname, 'fixtures', 'checkpoints');
let glunet: GocorParams;
let pwcnet: GocorParams;
beforeAll(async () => {
  glunet = await loadParams(path.join(CKPT, 'glunet_gocor_like.pth'));
  pwcnet = await loadParams(path.join(CKPT, 'pwcnet_gocor_like.pth.tar'));
});

// C x 4 x 4 features with a little structure, the query shifted by one column.
function features(C: number, shift: number) {
  const data = new Float32Array(C * 16);
  for (let c = 0; c < C; c++)
    for (let y = 0; y < 4; y++)
      for (let x = 0; x < 4; x++) data[c * 16 + y * 4 + x] = Math.sin(0.7 * c + 1.3 * y + 0.9 * (x + shift));
  return { data, batch: 1, channels: C, height: 4, width: 4 };
}

describe('GlobalGOCor / LocalGOCor take what loadParams returns', () => {
  it('GlobalGOCor uses the global part; the volume equals the one with params.global', async () => {
    const g = new GlobalGOCor({ params: glunet });
    expect(g.params).toBe(glunet.global);
    const [ref, qry] = [features(512, 0), features(512, 1)];
    const a = await g.correlate(ref, qry);
    const b = await new GlobalGOCor({ params: glunet.global }).correlate(ref, qry);
    expect(a.data).toEqual(b.data);
    // The untrained default volume differs: the file's parameters are the ones used.
    const c = await new GlobalGOCor().correlate(ref, qry);
    expect(c.data).not.toEqual(a.data);
  });

  it('LocalGOCor uses the shared local part, or a PWC-Net level with `level`', async () => {
    expect(new LocalGOCor({ params: glunet }).params).toBe(glunet.local);
    for (const level of ['2', '3', '4', '5', '6'] as const)
      expect(new LocalGOCor({ params: pwcnet, level }).params).toBe(pwcnet.localLevels[level]);
    expect(pwcnet.localLevels['2']!.scaling).not.toBe(pwcnet.localLevels['6']!.scaling);
    // A round trip through a safetensors file gives the same module.
    const again = await loadParams(await saveParams(pwcnet));
    expect(new LocalGOCor({ params: again, level: '4' }).params).toEqual(pwcnet.localLevels['4']);
  });

  it('a missing part is ERR_GOCOR_PARAMS naming what the file holds; a bad level is ERR_GOCOR_INVALID_ARG', () => {
    expect(() => new GlobalGOCor({ params: pwcnet })).toThrow(
      /params hold no global GOCor module, only level 2 \(local_corr_2\.\*\), .*level 6/,
    );
    expect(() => new LocalGOCor({ params: pwcnet })).toThrow(
      /params hold no shared local GOCor module \(local_corr\.\*\), only level 2 .*; pick one with options\.level/,
    );
    expect(() => new LocalGOCor({ params: glunet, level: '3' })).toThrow(
      /params hold no level 3 \(local_corr_3\.\*\), only global \(corr\.corr_module\.\*\), local \(local_corr\.\*\)/,
    );
    for (const f of [
      () => new LocalGOCor({ params: pwcnet, level: '7' as '2' }),
      () => new LocalGOCor({ params: pwcnet.localLevels['2'], level: '2' }),
      () => new LocalGOCor({ level: '2' }),
    ])
      expect(f).toThrow(expect.objectContaining({ code: 'ERR_GOCOR_INVALID_ARG' }));
    expect(() => new GlobalGOCor({ params: pwcnet })).toThrow(expect.objectContaining({ code: 'ERR_GOCOR_PARAMS' }));
  });
});

describe('match: numIter as one number', () => {
  let a: Image;
  let b: Image;
  beforeAll(async () => {
    const img = await loadImage(path.join(__dirname, '..', 'examples', 'astronaut.png'), { gray: true });
    const crop = (x0: number) => {
      const data = new Float32Array(96 * 96);
      for (let y = 0; y < 96; y++)
        for (let x = 0; x < 96; x++) data[y * 96 + x] = img.data[(y + 100) * img.width + x + x0] as number;
      return { data, channels: 1, height: 96, width: 96 };
    };
    a = crop(100);
    b = crop(103);
  });
  it('numIter: K is {global: K, local: K}; K matters', async () => {
    const opts = { quality: 'fast', threads: 1 } as const;
    const one = await match(a, b, { ...opts, numIter: 1 });
    expect(one.data).toEqual((await match(a, b, { ...opts, numIter: { global: 1, local: 1 } })).data);
    expect(one.data).not.toEqual((await match(a, b, { ...opts, numIter: { global: 1, local: 0 } })).data);
    await expect(match(a, b, { numIter: 21 })).rejects.toThrow(/options\.numIter/);
    await expect(match(a, b, { numIter: 1.5 })).rejects.toMatchObject({ code: 'ERR_GOCOR_INVALID_ARG' });
  });
});
