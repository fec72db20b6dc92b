/**
 * The memory limit uses the native working-set figures (estimateBytes, computed next to the
 * allocations in C++): each figure is checked against the measured peak resident set of a child
 * process running the call (against `dist/`; build first with `npm run build:ts`), and every
 * compute path refuses work over the limit with ERR_GOCOR_TOO_LARGE before allocating.
 */
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import {
  correlate,
  DEFAULT_MAX_BYTES,
  extractFeatures,
  GlobalGOCor,
  LocalGOCor,
  match,
  matchFeatures,
  resizeFlow,
  setMemoryLimit,
  warpImage,
} from '../../lib';

const CHILD = path.join(__dirname, 'memory-child.js');
const MiB = 2 ** 20;

describe('reliability: working-set estimates against the measured peak', () => {
  // Within 1.5x either way. The estimate counts what the code allocates; the measured peak adds
  // what glibc keeps resident after frees (the matcher's stages: up to ~1.3x).
  it.each([
    'correlateGlobal',
    'GlobalGOCor',
    'LocalGOCor',
    'extractFeatures',
    'match',
    'matchOutputShape',
  ])('%s', (name) => {
    const out = execFileSync(process.execPath, ['--expose-gc', CHILD, name], { encoding: 'utf8', timeout: 120_000 });
    const { estimate, peak } = JSON.parse(out) as { estimate: number; peak: number };
    console.log(
      `memory: ${name}: estimate ${(estimate / MiB).toFixed(1)} MiB, peak ${(peak / MiB).toFixed(1)} MiB (${(estimate / peak).toFixed(2)})`,
    );
    expect(peak).toBeGreaterThan(50 * MiB); // large enough that the process's own noise is small
    expect(estimate / peak).toBeGreaterThan(1 / 1.5);
    expect(estimate / peak).toBeLessThan(1.5);
  });
});

describe('reliability: paths that skipped the memory limit now refuse', () => {
  afterEach(() => setMemoryLimit(DEFAULT_MAX_BYTES));
  const img = (w: number, h: number) => ({ data: new Float32Array(w * h).fill(0.5), channels: 1, height: h, width: w });
  const tooLarge = { code: 'ERR_GOCOR_TOO_LARGE' };

  it('GlobalGOCor on 107x107, C = 4: needs ~4 GiB (the old estimate said 2000 MiB and let it run)', async () => {
    const f = { data: new Float32Array(4 * 107 * 107), channels: 4, height: 107, width: 107 };
    const err = await new GlobalGOCor().correlate(f, f).catch((e: unknown) => e);
    expect(err).toMatchObject(tooLarge);
    expect((err as Error).message).toMatch(/needs about 3\.9\d GiB, over the memory limit of 2\.00 GiB/);
  });

  it('match with outputShape 16384 x 16384 (a 2 GiB flow)', async () => {
    await expect(
      match(img(128, 96), img(128, 96), { outputShape: { width: 16384, height: 16384 } }),
    ).rejects.toMatchObject(tooLarge);
  });

  it('match(pyramidA, pyramidB) and matchFeatures', async () => {
    const p = await extractFeatures(img(256, 192), { globalSize: 16 });
    const f = { data: new Float32Array(256 * 96 * 128).fill(0.1), channels: 256, height: 96, width: 128 };
    setMemoryLimit(8 * MiB); // the pyramids' match needs ~12 MiB, the feature maps' ~83 MiB
    await expect(match(p, p, { globalSize: 16 })).rejects.toMatchObject(tooLarge);
    await expect(matchFeatures(f, f)).rejects.toMatchObject(tooLarge);
    setMemoryLimit(DEFAULT_MAX_BYTES);
    await expect(match(p, p, { globalSize: 16, outputShape: { width: 16384, height: 16384 } })).rejects.toMatchObject(
      tooLarge,
    );
  });

  it('extractFeatures, LocalGOCor, local correlation, warpImage and resizeFlow', async () => {
    await expect(
      resizeFlow({ data: new Float32Array(2 * 16), width: 4, height: 4 }, { width: 16384, height: 16384 }),
    ).rejects.toMatchObject(tooLarge);
    setMemoryLimit(8 * MiB);
    const f = { data: new Float32Array(128 * 96 * 96), channels: 128, height: 96, width: 96 };
    await expect(extractFeatures(img(512, 512))).rejects.toMatchObject(tooLarge);
    await expect(new LocalGOCor().correlate(f, f)).rejects.toMatchObject(tooLarge);
    await expect(correlate(f, f, { mode: 'local' })).rejects.toMatchObject(tooLarge);
    const flow = { data: new Float32Array(2 * 1024 * 1024), width: 1024, height: 1024 };
    await expect(
      warpImage({ data: new Float32Array(3 * 16), channels: 3, height: 4, width: 4 }, flow),
    ).rejects.toMatchObject(tooLarge);
  });
});
