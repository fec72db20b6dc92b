/**
 * The device contract, the same for every public compute function: 'cpu' runs on the CPU, 'auto'
 * picks (CUDA when usable and the operation has a CUDA twin), an explicit 'cuda' without a usable
 * GPU rejects with ERR_GOCOR_CUDA_UNAVAILABLE; every result says where it ran.
 */
import { describe, expect, it } from 'vitest';
import {
  backends,
  correlate,
  type DeviceOption,
  extractFeatures,
  GlobalGOCor,
  LocalGOCor,
  match,
  resizeFlow,
  warpImage,
} from '../lib';
import { randn } from './support/ref';

const fm = { data: randn(8 * 10 * 12, 1), channels: 8, height: 10, width: 12 };
const img = { data: randn(48 * 64, 2).map((v) => 0.5 + 0.1 * v), channels: 1, height: 48, width: 64 };
const flow = { data: new Float32Array(2 * 48 * 64).fill(0.5), width: 64, height: 48 };

// Each compute function once with a given device; `cuda` says whether it has a CUDA twin.
const calls: { name: string; cuda: boolean; run: (device: DeviceOption) => Promise<{ device: string }> }[] = [
  { name: 'correlate (global)', cuda: true, run: (device) => correlate(fm, fm, { device }) },
  { name: 'correlate (local)', cuda: true, run: (device) => correlate(fm, fm, { mode: 'local', device }) },
  { name: 'GlobalGOCor', cuda: true, run: (device) => new GlobalGOCor({ device, numIter: 1 }).correlate(fm, fm) },
  { name: 'LocalGOCor', cuda: true, run: (device) => new LocalGOCor({ device, numIter: 1 }).correlate(fm, fm) },
  { name: 'match', cuda: true, run: (device) => match(img, img, { device, globalSize: 8 }) },
  {
    name: 'extractFeatures',
    cuda: false,
    run: async (device) => ({ device: (await extractFeatures(img, { device, globalSize: 8 })).device ?? '' }),
  },
  { name: 'warpImage', cuda: false, run: (device) => warpImage(img, flow, { device }) },
  { name: 'resizeFlow', cuda: false, run: (device) => resizeFlow(flow, { width: 32, height: 24 }, { device }) },
];

const gpu = backends().cuda.available;

describe('device: one contract for every compute function', () => {
  it.each(calls)("$name: 'cpu' runs on the CPU", async ({ run }) => {
    expect((await run('cpu')).device).toBe('cpu');
  });

  it.each(calls)("$name: 'auto' picks", async ({ run, cuda }) => {
    expect((await run('auto')).device).toBe(gpu && cuda ? 'cuda' : 'cpu');
  });

  it.each(calls)("$name: 'cuda' without a usable GPU rejects with ERR_GOCOR_CUDA_UNAVAILABLE", async ({
    run,
    cuda,
  }) => {
    if (gpu) {
      expect((await run('cuda')).device).toBe(cuda ? 'cuda' : 'cpu');
      return;
    }
    const err = await run('cuda').catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'GocorError', code: 'ERR_GOCOR_CUDA_UNAVAILABLE' });
    expect((err as Error).message).toMatch(new RegExp(backends().cuda.reason.slice(0, 20).replace(/[()]/g, '.')));
  });

  it.each(calls)('$name: an unknown device is ERR_GOCOR_INVALID_ARG naming the option', async ({ run }) => {
    await expect(Promise.resolve().then(() => run('gpu' as DeviceOption))).rejects.toMatchObject({
      code: 'ERR_GOCOR_INVALID_ARG',
      message: expect.stringMatching(/options\.device/),
    });
  });
});
