import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultLocalParams, GocorError, loadParams, readCheckpoint } from '../lib';
import { paramsToTensors, parseSafetensors } from '../lib/params';
import { bytesOf, f32, glob, legacyCheckpoint, PROTO2, type Spec, zip, zipCheckpoint } from './support/checkpoint';

const DIR = path.join(__dirname, 'fixtures', 'checkpoints');
const fixture = (name: string) => readFileSync(path.join(DIR, name));

const FORMATS = [
  ['zip', zipCheckpoint],
  ['legacy', legacyCheckpoint],
] as const;

// ---- tests --------------------------------------------------------------------------------------

describe('readCheckpoint: the shared fixtures (torch.save output)', () => {
  for (const [file, expected] of [
    ['glunet_gocor_like.pth', 'glunet_gocor_like.expected.safetensors'],
    ['pwcnet_gocor_like.pth.tar', 'pwcnet_gocor_like.expected.safetensors'],
  ] as const) {
    it(`${file}: every GOCor tensor equals the expected one bit for bit`, async () => {
      const got = await readCheckpoint(path.join(DIR, file));
      const want = parseSafetensors(fixture(expected));
      expect(Object.keys(want).length).toBeGreaterThan(10);
      for (const [name, t] of Object.entries(want)) {
        expect(got[name]?.dtype, name).toBe('float32');
        expect(got[name]?.shape, name).toEqual(t.shape);
        expect(got[name]?.data, name).toEqual(t.data);
      }
      // loadParams keeps exactly those tensors (by their official names) and ignores the rest.
      expect(await loadParams(path.join(DIR, file))).toEqual(await loadParams(fixture(expected)));
    });
  }

  it('zip fixture: the state_dict wrapper is unwrapped; non-GOCor tensors keep their dtype and shape', async () => {
    const got = await readCheckpoint(fixture('glunet_gocor_like.pth'));
    expect(got['decoder4.conv_0.1.num_batches_tracked']).toMatchObject({ dtype: 'int64', shape: [] });
    expect(got['decoder4.conv_0.1.num_batches_tracked']!.data).toBeInstanceOf(BigInt64Array);
    expect(got['decoder4.conv_0.1.running_mean']).toMatchObject({ dtype: 'float16', shape: [128] });
    expect(got['decoder4.conv_0.0.weight']).toMatchObject({ dtype: 'float32', shape: [128, 81, 3, 3] });
    expect(got.epoch).toBeUndefined();
    const p = await loadParams(path.join(DIR, 'glunet_gocor_like.pth'));
    expect(p.global!.targetFg.length).toBe(512);
    expect([p.global!.regInterDim, p.global!.regOutputDim]).toEqual([16, 16]);
    expect(Object.keys((await loadParams(path.join(DIR, 'pwcnet_gocor_like.pth.tar'))).localLevels).sort()).toEqual([
      '2',
      '3',
      '4',
      '5',
      '6',
    ]);
  });
});

describe('readCheckpoint: dtypes, views and both layouts (checkpoints written here)', () => {
  const storage12 = Array.from({ length: 12 }, (_, i) => i);
  const specs: Spec[] = [
    // A transposed view [3,2] of a [2,3] block, a strided view with an offset, a broadcast view.
    f32('t', 'a', storage12, { shape: [3, 2], stride: [1, 3] }),
    f32('off', 'a', storage12, { offset: 5, shape: [2], stride: [3] }),
    f32('bc', 'a', storage12, { offset: 4, shape: [2, 2], stride: [0, 1] }),
    // Contiguous apart from the stride of a size-1 dimension (which torch leaves arbitrary).
    f32('c1', 'a', storage12, { offset: 2, shape: [2, 1, 3], stride: [3, 99, 1] }),
    {
      ...f32('d', 'b', []),
      storage: 'DoubleStorage',
      bytes: bytesOf(Float64Array.of(0.1, -2.5)),
      numel: 2,
      shape: [2],
    },
    // float16: 1.5, -2, 65504, 2^-24 (smallest subnormal); bfloat16: 1.5, -0.
    {
      ...f32('h', 'c', []),
      storage: 'HalfStorage',
      bytes: bytesOf(Uint16Array.of(0x3e00, 0xc000, 0x7bff, 0x0001)),
      numel: 4,
      shape: [4],
    },
    {
      ...f32('bf', 'e', []),
      storage: 'BFloat16Storage',
      bytes: bytesOf(Uint16Array.of(0x3fc0, 0x8000)),
      numel: 2,
      shape: [2],
    },
    {
      ...f32('l', 'g', []),
      storage: 'LongStorage',
      bytes: bytesOf(BigInt64Array.of(-3n, 1n << 40n)),
      numel: 2,
      shape: [2],
    },
    { ...f32('i', 'k', []), storage: 'IntStorage', bytes: bytesOf(Int32Array.of(-7)), numel: 1, shape: [], stride: [] },
    { ...f32('b', 'm', []), storage: 'BoolStorage', bytes: Uint8Array.of(1, 0, 1), numel: 3, shape: [3] },
  ];
  for (const [format, write] of FORMATS) {
    for (const wrap of [false, true]) {
      it(`${format}${wrap ? ', {state_dict: ...}' : ''}: values gathered through strides and converted by dtype`, async () => {
        const got = await readCheckpoint(write(specs, { wrap }));
        expect(Object.keys(got)).toEqual(specs.map((s) => s.name));
        expect(got.t).toEqual({ dtype: 'float32', shape: [3, 2], data: Float32Array.of(0, 3, 1, 4, 2, 5) });
        expect(got.off!.data).toEqual(Float32Array.of(5, 8));
        expect(got.bc!.data).toEqual(Float32Array.of(4, 5, 4, 5));
        expect(got.c1).toEqual({ dtype: 'float32', shape: [2, 1, 3], data: Float32Array.of(2, 3, 4, 5, 6, 7) });
        expect(got.d).toEqual({ dtype: 'float64', shape: [2], data: Float64Array.of(0.1, -2.5) });
        expect(got.h).toEqual({ dtype: 'float16', shape: [4], data: Float32Array.of(1.5, -2, 65504, 2 ** -24) });
        expect(got.bf).toEqual({ dtype: 'bfloat16', shape: [2], data: Float32Array.of(1.5, -0) });
        expect(got.l).toEqual({ dtype: 'int64', shape: [2], data: BigInt64Array.of(-3n, 1n << 40n) });
        expect(got.i).toEqual({ dtype: 'int32', shape: [], data: Int32Array.of(-7) });
        expect(got.b).toEqual({ dtype: 'bool', shape: [3], data: Uint8Array.of(1, 0, 1) });
      });
    }
  }

  it('zip: deflated entries are inflated', async () => {
    const got = await readCheckpoint(zipCheckpoint(specs, { deflate: true }));
    expect(got.t!.data).toEqual(Float32Array.of(0, 3, 1, 4, 2, 5));
  });

  it('loadParams: float64 GOCor tensors (and a DataParallel module. prefix) become float32 parameters', async () => {
    const local = { ...defaultLocalParams(), scaling: 0.75, filterReg: Math.fround(0.03) };
    const tensors = paramsToTensors({ localLevels: { '4': local } });
    const f64specs = Object.entries(tensors).map(([name, t], k) => ({
      ...f32(`module.${name}`, String(k), []),
      storage: 'DoubleStorage',
      bytes: bytesOf(Float64Array.from(t.data)),
      numel: t.data.length,
      shape: t.shape,
      stride: t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1)),
    }));
    for (const [, write] of FORMATS) {
      const p = await loadParams(write([...f64specs, f32('fc.weight', 'x', [1, 2])]));
      expect(p.localLevels['4']).toEqual(local);
      expect(p.global).toBeUndefined();
    }
  });
});

describe('readCheckpoint: bad, corrupt and malicious checkpoints', () => {
  const one = [f32('w', '0', [1, 2, 3])];
  const rejects = async (source: Uint8Array | string, message: RegExp) => {
    const err = await readCheckpoint(source).catch((e) => e);
    expect(err).toBeInstanceOf(GocorError);
    expect(err.code).toBe('ERR_GOCOR_PARAMS');
    expect(err.message).toMatch(message);
  };

  for (const [format, write] of FORMATS) {
    it(`${format}: a global outside the whitelist (os.system) is refused by name, nothing runs`, async () => {
      await rejects(
        write(one, { dictGlobal: ['os', 'system'] }),
        /GLOBAL at byte \d+: global os\.system is not allowed/,
      );
      await expect(loadParams(write(one, { dictGlobal: ['os', 'system'] }))).rejects.toMatchObject({
        code: 'ERR_GOCOR_PARAMS',
      });
    });
    it(`${format}: a storage smaller than its tensors say, and a view beyond its storage`, async () => {
      await rejects(write([{ ...one[0]!, numel: 4 }]), format === 'zip' ? /storage 0 holds 12 bytes/ : /ends|storage/);
      await rejects(write([{ ...one[0]!, offset: 1, shape: [2], stride: [2] }]), /reaches element 3 of a storage of 3/);
    });
  }

  it('the legacy fixture with subprocess.check_output in place of OrderedDict', async () => {
    const buf = Buffer.from(fixture('pwcnet_gocor_like.pth.tar'));
    const at = buf.indexOf('collections\nOrderedDict\n');
    expect(at).toBeGreaterThan(0);
    buf.write('subprocess\ncheck_output\n', at);
    await rejects(buf, /global subprocess\.check_output is not allowed/);
  });

  it('opcodes a state dict never uses are refused by name', async () => {
    const zipWith = (pickle: Buffer) => zip([['c/data.pkl', pickle]]);
    // INST (protocol 0's class instantiation) and REDUCE on a storage type.
    await rejects(zipWith(Buffer.from('(ios\nsystem\n.')), /pickle opcode INST at byte 1 is not allowed/);
    await rejects(
      zipWith(Buffer.concat([PROTO2, glob('torch', 'FloatStorage'), Buffer.from(')R.')])),
      /REDUCE on torch\.FloatStorage is not allowed/,
    );
  });

  it('a list that holds itself, and a broadcast view beyond the memory limit', async () => {
    const selfList = Buffer.concat([PROTO2, glob('torch._utils', '_rebuild_tensor_v2'), Buffer.from(']q\x00h\x00aR.')]);
    await rejects(zip([['c/data.pkl', selfList]]), /_rebuild_tensor_v2 with arguments \(\(\(…\)\)\)/);
    const huge = readCheckpoint(zipCheckpoint([f32('w', '0', [1], { shape: [1e6, 1e6], stride: [0, 0] })]));
    await expect(huge).rejects.toMatchObject({
      code: 'ERR_GOCOR_TOO_LARGE',
      message: /checkpoint tensor w \[1000000, 1000000\]/,
    });
  });

  it('truncated and corrupted files', async () => {
    const zipped = fixture('glunet_gocor_like.pth');
    await rejects(zipped.subarray(0, zipped.length - 30), /end of central directory/);
    await rejects(zipped.subarray(0, 200_000), /end of central directory/);
    const flipped = Buffer.from(zipped);
    // Byte 200000 lies inside the largest storage (data/16: bytes 26040 + header .. 399376).
    flipped[200_000] = (flipped[200_000] as number) ^ 0xff;
    await rejects(flipped, /CRC/);
    const legacy = fixture('pwcnet_gocor_like.pth.tar');
    await rejects(legacy.subarray(0, legacy.length - 10), /truncated/);
    await rejects(legacy.subarray(0, 3000), /ends early/);
    await rejects(fixture('pwcnet_gocor_like.expected.safetensors'), /not a PyTorch checkpoint/);
    await rejects(zip([['c/other', Buffer.from('x')]]), /no <archive>\/data\.pkl/);
  });

  it('no GOCor tensors; bad arguments', async () => {
    await expect(loadParams(zipCheckpoint([f32('fc.weight', '0', [1])]))).rejects.toThrow(/holds no GOCor tensors/);
    await expect(readCheckpoint(42 as unknown as string)).rejects.toMatchObject({ code: 'ERR_GOCOR_INVALID_ARG' });
    await expect(readCheckpoint('/nonexistent.pth')).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
  });
});
