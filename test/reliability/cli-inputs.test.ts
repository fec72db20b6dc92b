/**
 * Input files that are not what they claim: FIFOs and links to /dev/zero where a .npy, .flo,
 * parameter or ground-truth file should be, headers that announce far more (or less) than the file
 * holds, decode bombs, SVG, malformed safetensors and .npy headers, and CLI ranges the library refuses.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { closeSync, ftruncateSync, openSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import { beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_MAX_BYTES, loadImage, loadNpy, loadParams, readFlo, readNpy, setMemoryLimit } from '../../lib';
import { encodeSafetensors } from '../../lib/params';
import { CLI, cliBuilt, ROOT, runCli, tempDir, texture, writeShiftedPair } from '../cli/fixtures';

const tmp = tempDir('gocor-relinputs-');
const S = 64;
const pairA = path.join(tmp, 'a.png');
const pairB = path.join(tmp, 'b.png');

beforeAll(async () => {
  if (!cliBuilt()) throw new Error(`${CLI} is missing: run \`npm run build:ts\` before the tests`);
  await writeShiftedPair(texture(120, 120, 5), 120, S, { dx: 2, dy: 1 }, pairA, pairB);
});

/** A FIFO at `name` (no writer ever opens it). */
function fifo(name: string): string {
  const p = path.join(tmp, name);
  execFileSync('mkfifo', [p]);
  return p;
}

/** A symlink at `name` to /dev/zero (reads never end). */
function zeroLink(name: string): string {
  const p = path.join(tmp, name);
  symlinkSync('/dev/zero', p);
  return p;
}

/** A sparse file: `head` then zeros up to `size` bytes (no disk space used). */
function sparse(name: string, head: Buffer, size: number): string {
  const p = path.join(tmp, name);
  const fd = openSync(p, 'w');
  writeSync(fd, head, 0, head.length, 0);
  ftruncateSync(fd, size);
  closeSync(fd);
  return p;
}

function npyHeader(shape: string, descr = '<f4'): Buffer {
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  header += `${' '.repeat(64 - ((10 + header.length + 1) % 64))}\n`;
  const pre = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0, header.length & 255, header.length >> 8]);
  return Buffer.concat([pre, Buffer.from(header, 'latin1')]);
}

function floHeader(W: number, H: number): Buffer {
  const b = Buffer.alloc(12);
  b.write('PIEH', 0, 'latin1');
  b.writeInt32LE(W, 4);
  b.writeInt32LE(H, 8);
  return b;
}

/** A PNG whose header says W x H (8-bit, gray or RGB) and whose pixel data is a few bytes: a bomb's header. */
function pngHeaderOnly(W: number, H: number, colorType: 0 | 2): Buffer {
  const chunk = (type: string, data: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(zlib.crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(W, 0);
  ihdr.writeUInt32BE(H, 4);
  ihdr[8] = 8;
  ihdr[9] = colorType;
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.alloc(64))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

/** Resolves with the rejection's code, or fails when `p` takes longer than `ms` (a hang) or resolves. */
async function codeWithin(p: Promise<unknown>, ms: number): Promise<string> {
  let timer: NodeJS.Timeout | undefined;
  const hang = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms (a hang)`)), ms);
  });
  try {
    await Promise.race([p, hang]);
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  } finally {
    clearTimeout(timer);
  }
  throw new Error('expected a rejection');
}

/** Peak RSS growth (bytes) while `fn` runs. */
async function peakGrowth(fn: () => Promise<unknown>): Promise<number> {
  const before = process.resourceUsage().maxRSS;
  await fn().catch(() => undefined);
  return (process.resourceUsage().maxRSS - before) * 1024;
}

describe('reliability: input paths that are not regular files (item 4)', () => {
  it('a FIFO or a link to /dev/zero as .npy, .flo or parameter file is ERR_GOCOR_IO at once', async () => {
    for (const [name, read] of [
      ['npy', readNpy],
      ['npy', loadNpy],
      ['flo', readFlo],
      ['safetensors', loadParams],
    ] as const) {
      const f = fifo(`fifo-${read.name}.${name}`);
      expect(await codeWithin((read as (p: string) => Promise<unknown>)(f), 5000), `${read.name} FIFO`).toBe(
        'ERR_GOCOR_IO',
      );
      const z = zeroLink(`zero-${read.name}.${name}`);
      expect(await codeWithin((read as (p: string) => Promise<unknown>)(z), 5000), `${read.name} /dev/zero`).toBe(
        'ERR_GOCOR_IO',
      );
    }
    await expect(readNpy(zeroLink('zero-msg.npy'))).rejects.toThrow(/character device/);
  }, 60_000);

  it('reads no more than the header announces: a 1.5 GiB file with a 2x2 header is refused without reading it', async () => {
    const big = 1.5 * 2 ** 30;
    const npy = sparse('big.npy', npyHeader('(2, 2)'), big);
    const flo = sparse('big.flo', floHeader(2, 2), big);
    expect(await peakGrowth(() => readNpy(npy))).toBeLessThan(200 * 2 ** 20);
    await expect(readNpy(npy)).rejects.toThrow(/expected 16 data bytes for shape \(2, 2\)/);
    expect(await peakGrowth(() => readFlo(flo))).toBeLessThan(200 * 2 ** 20);
    await expect(readFlo(flo)).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
    // No header bounds a parameter file: the memory limit does, before reading.
    const params = sparse('big.safetensors', Buffer.alloc(8), DEFAULT_MAX_BYTES + 2 ** 20);
    expect(await peakGrowth(() => loadParams(params))).toBeLessThan(200 * 2 ** 20);
    await expect(loadParams(params)).rejects.toMatchObject({ code: 'ERR_GOCOR_TOO_LARGE' });
  }, 60_000);

  it('batch: a FIFO or /dev/zero as ground truth fails that pair with ERR_GOCOR_IO, the batch ends', async () => {
    const list = path.join(tmp, 'gt.csv');
    const gtFifo = fifo('gt-fifo.flo');
    const gtZero = zeroLink('gt-zero.npy');
    const gtPng = fifo('gt-fifo.png');
    writeFileSync(
      list,
      ['a,b,gt', `a.png,b.png,${gtFifo}`, `a.png,b.png,${gtZero}`, `a.png,b.png,${gtPng}`, 'a.png,b.png'].join('\n'),
    );
    const r = await runCli(['batch', list, '-o', path.join(tmp, 'out-gt'), '--json', '--quiet'], { timeout: 60_000 });
    expect(r.signal).toBeNull();
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ total: 4, ok: 1, failed: 3 });
  }, 90_000);
});

describe('reliability: decode bombs and buffers that change (item 8)', () => {
  it('a 13000x13000 PNG is ERR_GOCOR_TOO_LARGE from its header, before decoding', async () => {
    const bomb = pngHeaderOnly(13000, 13000, 2);
    expect(bomb.length).toBeLessThan(200);
    await expect(loadImage(bomb)).rejects.toMatchObject({ code: 'ERR_GOCOR_TOO_LARGE' });
  });

  it('CLI match: two 11000x11000 PNGs that each fit are refused together before decoding', async () => {
    const a = path.join(tmp, 'bomb-a.png');
    const b = path.join(tmp, 'bomb-b.png');
    writeFileSync(a, pngHeaderOnly(11000, 11000, 2));
    writeFileSync(b, pngHeaderOnly(11000, 11000, 2));
    const r = await runCli(['match', a, b, '-o', path.join(tmp, 'out-bomb')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^gocor: ERR_GOCOR_TOO_LARGE: decoding .*11000x11000.*GiB/);
  });

  it('a 16000x16000 disparity ground truth is refused before decoding', async () => {
    const gt = path.join(tmp, 'disp.png');
    writeFileSync(gt, pngHeaderOnly(16000, 16000, 0));
    const r = await runCli(['match', pairA, pairB, '-o', path.join(tmp, 'out-disp'), '--gt', gt]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^gocor: ERR_GOCOR_TOO_LARGE: reading disparity ground truth .*16000x16000/);
  });

  it('loadImage copies its bytes: a resizable buffer shrunk at once neither crashes nor changes the image', async () => {
    const script = `
      const { loadImage } = require(${JSON.stringify(path.join(path.dirname(CLI), 'index.js'))});
      const png = require('node:fs').readFileSync(${JSON.stringify(pairA)});
      (async () => {
        for (let k = 0; k < 20; k++) {
          const ab = new ArrayBuffer(png.length, { maxByteLength: png.length });
          const u8 = new Uint8Array(ab);
          u8.set(png);
          const p = loadImage(u8);
          ab.resize(0);
          const img = await p;
          if (img.width !== ${S} || img.height !== ${S}) throw new Error('wrong size ' + img.width);
        }
        process.stdout.write('ok');
      })();`;
    const r = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.signal, r.stderr).toBeNull();
    expect(r.stdout).toBe('ok');
  }, 90_000);
});

describe('reliability: SVG, parameter and .npy headers, CLI ranges (item 10)', () => {
  const svg = Buffer.from(
    '<svg xmlns="http://www.w3.org/2000/svg" width="32" height="24"><rect width="32" height="24" fill="#f80"/></svg>',
  );

  it('refuses SVG unless allowSvg / --allow-svg', async () => {
    await expect(loadImage(svg)).rejects.toMatchObject({ code: 'ERR_GOCOR_IMAGE', message: /SVG.*allowSvg/ });
    const img = await loadImage(svg, { allowSvg: true });
    expect([img.width, img.height]).toEqual([32, 24]);
    const file = path.join(tmp, 'x.svg');
    writeFileSync(file, svg);
    const r = await runCli(['match', file, file, '-o', path.join(tmp, 'out-svg')]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^gocor: ERR_GOCOR_IMAGE: .*SVG.*--allow-svg/);
    const ok = await runCli(['match', file, file, '-o', path.join(tmp, 'out-svg2'), '--allow-svg', '--quiet']);
    expect(ok.code, ok.stderr).toBe(0);
  }, 60_000);

  /** A safetensors file with a hand-written header (F32 tensors laid out as given). */
  function safetensors(headerJson: string, bytes: number): Buffer {
    let json = headerJson;
    while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += ' ';
    const out = Buffer.alloc(8 + Buffer.byteLength(json) + bytes);
    out.writeBigUInt64LE(BigInt(Buffer.byteLength(json)), 0);
    out.write(json, 8);
    return out;
  }

  it('loadParams: I = 0, filter_reg = -1, overlapping offsets, __proto__ and duplicate names are ERR_GOCOR_PARAMS', async () => {
    const pre = 'local_corr.';
    const local = (filterReg: number) => ({
      [`${pre}filter_initializer.scaling`]: { shape: [1], data: Float32Array.of(1) },
      [`${pre}filter_optimizer.log_step_length`]: { shape: [1], data: Float32Array.of(0) },
      [`${pre}filter_optimizer.filter_reg`]: { shape: [1], data: Float32Array.of(filterReg) },
      [`${pre}filter_optimizer.label_map_predictor.weight`]: { shape: [1, 10, 1, 1], data: new Float32Array(10) },
      [`${pre}filter_optimizer.spatial_weight_predictor.weight`]: { shape: [1, 10, 1, 1], data: new Float32Array(10) },
      [`${pre}filter_optimizer.target_mask_predictor.0.weight`]: { shape: [1, 10, 1, 1], data: new Float32Array(10) },
    });
    expect((await loadParams(encodeSafetensors(local(0.01)))).local?.filterReg).toBeCloseTo(0.01, 6);
    await expect(loadParams(encodeSafetensors(local(-1)))).rejects.toMatchObject({
      code: 'ERR_GOCOR_PARAMS',
      message: /filter_reg is -1/,
    });
    const g = 'corr.corr_module.';
    const global = {
      [`${g}filter_initializer.target_fg`]: { shape: [4], data: new Float32Array(4) },
      [`${g}filter_initializer.target_bg`]: { shape: [4], data: new Float32Array(4) },
      [`${g}filter_optimizer.log_step_length`]: { shape: [1], data: Float32Array.of(0) },
      [`${g}filter_optimizer.filter_reg`]: { shape: [1], data: Float32Array.of(0.01) },
      [`${g}filter_optimizer.reg_layer.weight1`]: { shape: [0, 1, 3, 3], data: new Float32Array(0) },
      [`${g}filter_optimizer.reg_layer.weight2`]: { shape: [16, 0, 3, 3], data: new Float32Array(0) },
      [`${g}filter_optimizer.label_map_predictor.weight`]: { shape: [1, 10, 1, 1], data: new Float32Array(10) },
      [`${g}filter_optimizer.spatial_weight_predictor.weight`]: { shape: [1, 10, 1, 1], data: new Float32Array(10) },
      [`${g}filter_optimizer.target_mask_predictor.0.weight`]: { shape: [1, 10, 1, 1], data: new Float32Array(10) },
    };
    await expect(loadParams(encodeSafetensors(global))).rejects.toMatchObject({
      code: 'ERR_GOCOR_PARAMS',
      message: /weight1 has shape \[0, 1, 3, 3\]/,
    });
    const t = (name: string, b: number, e: number) =>
      `"${name}":{"dtype":"F32","shape":[${(e - b) / 4}],"data_offsets":[${b},${e}]}`;
    const overlap = safetensors(`{${t('a', 0, 16)},${t('b', 8, 24)}}`, 24);
    await expect(loadParams(overlap)).rejects.toMatchObject({ code: 'ERR_GOCOR_PARAMS', message: /overlap/ });
    const proto = safetensors(`{${t('__proto__', 0, 4)}}`, 4);
    await expect(loadParams(proto)).rejects.toMatchObject({ code: 'ERR_GOCOR_PARAMS', message: /__proto__/ });
    const twice = safetensors(`{${t('a', 0, 4)},${t('a', 4, 8)}}`, 8);
    await expect(loadParams(twice)).rejects.toMatchObject({ code: 'ERR_GOCOR_PARAMS', message: /named twice/ });
    const dtype = safetensors('{"a":{"dtype":"toString","shape":[1],"data_offsets":[0,4]}}', 4);
    const err = await loadParams(dtype).catch((e: Error) => e);
    expect(err).toMatchObject({ code: 'ERR_GOCOR_PARAMS' });
    expect((err as Error).message).not.toMatch(/function|native code/);
  });

  it('.npy: shapes 0x2, 2.0, 2e0 and 9007199254740993 are malformed', async () => {
    for (const shape of ['(0x2,)', '(2.0,)', '(2e0,)', '(9007199254740993,)', '(2,,2)', '(-2,)']) {
      const bytes = Buffer.concat([npyHeader(shape), Buffer.alloc(8)]);
      await expect(readNpy(bytes), shape).rejects.toMatchObject({
        code: 'ERR_GOCOR_IO',
        message: /shape .* is malformed/,
      });
    }
    expect((await readNpy(Buffer.concat([npyHeader('(2,)'), Buffer.alloc(8)]))).shape).toEqual([2]);
    expect((await readNpy(Buffer.concat([npyHeader('()'), Buffer.alloc(4)]))).shape).toEqual([]);
  });

  it('CLI: ranges the library refuses are usage errors (exit 2); -o a file is ERR_GOCOR_IO', async () => {
    const o = ['-o', path.join(tmp, 'out-range')];
    expect((await runCli(['match', pairA, pairB, ...o, '--num-iter', '21'])).code).toBe(2);
    expect((await runCli(['match', pairA, pairB, ...o, '--num-iter', '3,21'])).code).toBe(2);
    const npy = path.join(tmp, 'f.npy');
    writeFileSync(npy, Buffer.concat([npyHeader('(1, 4, 3, 3)'), Buffer.alloc(4 * 36)]));
    const corr = (...args: string[]) => runCli(['correlate', npy, npy, '-o', path.join(tmp, 'v.npy'), ...args]);
    const zero = await corr('--method', 'gocor-local', '--search-radius', '0');
    expect(zero.code).toBe(2);
    expect(zero.stderr).toMatch(/search-radius of gocor-local must be an integer between 1 and 16/);
    expect((await corr('--method', 'gocor-local', '--search-radius', '17')).code).toBe(2);
    expect((await corr('--method', 'gocor-global', '--search-radius', '2')).code).toBe(2);
    expect((await corr('--method', 'correlation-local', '--num-iter', '2')).code).toBe(2);
    const ok = await corr('--method', 'correlation-local', '--search-radius', '0', '--quiet');
    expect(ok.code, ok.stderr).toBe(0);
  }, 60_000);

  it('memory messages size things in MiB or GiB, never "0.00 GiB"', async () => {
    setMemoryLimit(2 ** 20);
    try {
      const err = (await loadImage(path.join(ROOT, 'examples', 'astronaut.png')).catch((e: Error) => e)) as Error;
      expect(err).toMatchObject({ code: 'ERR_GOCOR_TOO_LARGE' });
      expect(err.message).toMatch(/needs about \d+(\.\d)? (KiB|MiB), over the memory limit of 1\.0 MiB/);
      expect(err.message).not.toMatch(/0\.00 GiB/);
    } finally {
      setMemoryLimit(DEFAULT_MAX_BYTES);
    }
  });
});
