import path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { GocorError, loadImage } from '../lib';

const EX = path.join(__dirname, '..', 'examples');

describe('loadImage', () => {
  it('decodes PNG to CHW float32 in [0,1] equal to the raw pixels / 255', async () => {
    const img = await loadImage(path.join(EX, 'astronaut.png'));
    expect([img.channels, img.height, img.width]).toEqual([3, 512, 512]);
    const { data } = await sharp(path.join(EX, 'astronaut.png'))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    // Pixel (y=100, x=200), channel 1 (green): interleaved HWC in the raw buffer, planar CHW in ours.
    const p = 100 * 512 + 200;
    expect(img.data[1 * 512 * 512 + p]).toBeCloseTo((data[p * 3 + 1] as number) / 255, 7);
    let min = 1;
    let max = 0;
    for (const v of img.data) {
      min = Math.min(min, v);
      max = Math.max(max, v);
    }
    expect(min).toBeGreaterThanOrEqual(0);
    expect(max).toBeLessThanOrEqual(1);
  });

  it('reads JPEG, WebP and TIFF buffers; gray and resize options', async () => {
    const src = sharp(path.join(EX, 'brick.png'));
    for (const fmt of ['jpeg', 'webp', 'tiff'] as const) {
      const buf = await src.clone().toFormat(fmt).toBuffer();
      const img = await loadImage(buf, { gray: true, resize: { width: 64, height: 48 } });
      expect([img.channels, img.height, img.width]).toEqual([1, 48, 64]);
      expect(img.data.length).toBe(48 * 64);
    }
    const rgb = await loadImage(path.join(EX, 'brick.png'));
    expect(rgb.channels).toBe(3); // gray sources are expanded to RGB unless gray is asked for
  });

  it('rejects corrupt input and bad options with GocorError codes', async () => {
    await expect(loadImage(Buffer.from('definitely not an image'))).rejects.toMatchObject({ code: 'ERR_GOCOR_IMAGE' });
    await expect(loadImage(42 as never)).rejects.toBeInstanceOf(GocorError);
    await expect(loadImage(path.join(EX, 'brick.png'), { resize: { width: 0, height: 5 } })).rejects.toThrow(
      /integer between 1 and 16384 for options.resize.width but received 0/,
    );
  });
});
