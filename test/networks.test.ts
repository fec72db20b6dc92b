// The official networks (lib/networks.ts): the golden cases of ../shared/conformance/networks for
// all four networks, with the weights regenerated here from the manifest's WEIGHTS rule (FNV-1a +
// splitmix64 by tensor name; GOCor's own tensors from <network>_gocor_params.safetensors), checked
// against the float64 outputs with the manifest's acceptance rule; strict loading; input checks.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { backends, GocorError, loadNetwork, type NetworkModel, networkTensors, type TensorRecord } from '../lib';
import { encodeSafetensors, parseSafetensors } from '../lib/params';
import { cliBuilt, readFloFile, runCli, tempDir, texture, writeShiftedPair } from './cli/fixtures';
import { bytesOf, legacyCheckpoint, type Spec, zipCheckpoint } from './support/checkpoint';
import { REPO } from './support/ref';

const DIR = process.env.GOCOR_NETWORKS_DIR ?? path.join(REPO, '..', 'shared', 'conformance', 'networks');
const HAVE = existsSync(path.join(DIR, 'manifest.json'));

interface OutFile {
  file: string;
  shape: number[];
  file_f64?: string;
  tolerance_max_abs_vs_f64?: number;
}
interface NetCase {
  files: Record<string, OutFile>;
  state_dict: [string, number[]][];
}
const manifest = (): { cases: Record<NetworkModel, NetCase> } =>
  JSON.parse(readFileSync(path.join(DIR, 'manifest.json'), 'utf8'));

function readLE(file: string, f64: boolean): Float64Array {
  const buf = readFileSync(path.join(DIR, file));
  const n = buf.length / (f64 ? 8 : 4);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = f64 ? buf.readDoubleLE(i * 8) : buf.readFloatLE(i * 4);
  return out;
}
const readInput = (f: OutFile) => ({ data: Float32Array.from(readLE(f.file, false)), shape: f.shape });

// ---- the WEIGHTS rule: 64-bit arithmetic on (hi, lo) uint32 halves ------------------------------

const TWO32 = 2 ** 32;
function mul64(ah: number, al: number, bh: number, bl: number): [number, number] {
  const a0 = al & 0xffff,
    a1 = al >>> 16,
    b0 = bl & 0xffff,
    b1 = bl >>> 16;
  const mid = a0 * b1 + a1 * b0;
  const low = a0 * b0 + (mid % 65536) * 65536;
  const lo = low % TWO32;
  const carry = Math.floor(low / TWO32);
  const hi = (a1 * b1 + Math.floor(mid / 65536) + carry + Math.imul(ah, bl) + Math.imul(al, bh)) >>> 0;
  return [hi >>> 0, lo >>> 0];
}
function add64(ah: number, al: number, bh: number, bl: number): [number, number] {
  const lo = al + bl;
  return [(ah + bh + (lo >= TWO32 ? 1 : 0)) >>> 0, lo >>> 0];
}
function xorShr(h: number, l: number, s: number): [number, number] {
  return [(h ^ (h >>> s)) >>> 0, (l ^ ((l >>> s) | (h << (32 - s)))) >>> 0];
}
const GOLDEN = [0x9e3779b9, 0x7f4a7c15] as const;
const M1 = [0xbf58476d, 0x1ce4e5b9] as const;
const M2 = [0x94d049bb, 0x133111eb] as const;

function fnv1a64(name: string): [number, number] {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(name, 'utf8')) h = ((h ^ BigInt(b)) * 0x100000001b3n) & 0xffffffffffffffffn;
  return [Number(h >> 32n), Number(h & 0xffffffffn)];
}

/** s in [-1, 1) for elements 0 .. n-1 of `name`. */
function stream(name: string, n: number): Float32Array {
  const [sh, sl] = fnv1a64(name);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let [h, l] = add64(sh, sl, 0, i);
    [h, l] = add64(h, l, GOLDEN[0], GOLDEN[1]);
    [h, l] = xorShr(h, l, 30);
    [h, l] = mul64(h, l, M1[0], M1[1]);
    [h, l] = xorShr(h, l, 27);
    [h, l] = mul64(h, l, M2[0], M2[1]);
    // z ^ (z >> 31), then >> 40: only the high word's top 24 bits matter.
    [h] = xorShr(h, l, 31);
    out[i] = 2 * ((h >>> 8) / 2 ** 24) - 1;
  }
  return out;
}

function weights(model: NetworkModel, c: NetCase): Record<string, TensorRecord> {
  const gocor = model.endsWith('_GOCor')
    ? parseSafetensors(readFileSync(path.join(DIR, `${model}_gocor_params.safetensors`)))
    : {};
  const rec: Record<string, TensorRecord> = {};
  const tenth = Math.fround(0.1);
  for (const [name, shape] of c.state_dict) {
    if (name.endsWith('num_batches_tracked')) continue;
    const g = gocor[name];
    if (g) {
      rec[name] = g;
      continue;
    }
    const n = shape.reduce((a, b) => a * b, 1);
    const s = stream(name, n);
    if (shape.length === 4) {
      const b = Math.fround(Math.sqrt(6 / ((shape[1] as number) * (shape[2] as number) * (shape[3] as number))));
      for (let i = 0; i < n; i++) s[i] = (s[i] as number) * b;
    } else if (name.endsWith('.weight') || name.endsWith('.running_var')) {
      for (let i = 0; i < n; i++) s[i] = 1 + Math.fround(tenth * (s[i] as number));
    } else if (name.endsWith('.bias') || name.endsWith('.running_mean')) {
      for (let i = 0; i < n; i++) s[i] = tenth * (s[i] as number);
    } else {
      throw new Error(`no WEIGHTS rule for ${name}`);
    }
    rec[name] = { shape, data: s };
  }
  return rec;
}

describe.skipIf(!HAVE)('official networks: golden cases (../shared/conformance/networks)', () => {
  const models: NetworkModel[] = ['PWCNet', 'PWCNet_GOCor', 'GLUNet', 'GLUNet_GOCor'];
  for (const model of models) {
    describe(model, () => {
      let c: NetCase;
      let out: Record<string, Float32Array> = {};
      let shapes: Record<string, number[]> = {};
      beforeAll(async () => {
        c = manifest().cases[model];
        const net = await loadNetwork(weights(model, c), { model, numIterGlobal: 3, numIterLocal: 3, device: 'cpu' });
        const f = c.files;
        out = {};
        shapes = {};
        const put = (key: string, list: { data: Float32Array; shape: number[] }[]) =>
          list.forEach((e, i) => {
            out[`${key}${i}`] = e.data;
            shapes[`${key}${i}`] = e.shape;
          });
        if (model.startsWith('PWC')) {
          const r = await net.forward({
            reference: readInput(f.input_reference as OutFile),
            query: readInput(f.input_query as OutFile),
          });
          put('flow_estimate_', r.flowEstimates);
        } else {
          const r = await net.forward({
            target: readInput(f.input_target as OutFile),
            source: readInput(f.input_source as OutFile),
            target256: readInput(f.input_target_256 as OutFile),
            source256: readInput(f.input_source_256 as OutFile),
          });
          put('flow_estimate_256_', r.flowEstimates256);
          put('flow_estimate_', r.flowEstimates);
        }
      }, 300_000);

      it('lists the state_dict of the manifest (names, shapes, order)', () => {
        expect(networkTensors(model).map((t) => [t.name, t.shape])).toEqual(c.state_dict);
      });

      const keys = model.startsWith('PWC')
        ? [0, 1, 2, 3, 4].map((i) => `flow_estimate_${i}`)
        : ['flow_estimate_256_0', 'flow_estimate_256_1', 'flow_estimate_0', 'flow_estimate_1'];
      for (const key of keys) {
        it(`${key}: max |ours - f64| within the manifest's tolerance`, () => {
          const f = c.files[key] as OutFile;
          expect(shapes[key]).toEqual(f.shape);
          const want = readLE(f.file_f64 as string, true);
          const got = out[key] as Float32Array;
          expect(got.length).toBe(want.length);
          let worst = 0;
          for (let i = 0; i < want.length; i++)
            worst = Math.max(worst, Math.abs((got[i] as number) - (want[i] as number)));
          const tol = f.tolerance_max_abs_vs_f64 as number;
          console.log(`${model} ${key}: max |ours - f64| ${worst.toExponential(2)}, tolerance ${tol.toExponential(2)}`);
          expect(worst).toBeLessThanOrEqual(tol);
        });
      }
    });
  }
});

describe('official networks: strict loading and input checks', () => {
  // A PWC-Net with small random weights (the values do not matter for these checks).
  const pwc = (): Record<string, TensorRecord> => {
    const rec: Record<string, TensorRecord> = {};
    for (const { name, shape } of networkTensors('PWCNet')) {
      const n = shape.reduce((a, b) => a * b, 1);
      rec[name] = { shape, data: stream(name, n).map((v) => 0.01 * v) };
    }
    return rec;
  };
  const rejects = async (p: Promise<unknown>, code: string, text: RegExp) => {
    const err = await p.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(GocorError);
    expect((err as GocorError).code).toBe(code);
    expect((err as GocorError).message).toMatch(text);
  };

  // The full network as a torch.save checkpoint: float32 tensors, int64 num_batches_tracked (none
  // in PWC-Net), one storage per tensor.
  const checkpoint = (rec: Record<string, TensorRecord>, legacy: boolean) => {
    const specs: Spec[] = Object.entries(rec).map(([name, t], i) => ({
      name,
      storage: 'FloatStorage',
      key: String(i),
      bytes: bytesOf(t.data),
      numel: t.data.length,
      offset: 0,
      shape: t.shape,
      stride: t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1)),
    }));
    return legacy ? legacyCheckpoint(specs) : zipCheckpoint(specs, { wrap: true });
  };

  it('a PyTorch checkpoint (zip with the state_dict wrapper, legacy bare) loads and computes what the record does', async () => {
    const rec = pwc();
    const img = (seed: string) => ({
      data: stream(seed, 3 * 64 * 128).map((v) => 0.5 + 0.5 * v),
      shape: [1, 3, 64, 128],
    });
    const want = await (await loadNetwork(rec, { model: 'PWCNet', threads: 2 })).forward({
      reference: img('a'),
      query: img('b'),
    });
    for (const legacy of [false, true]) {
      const net = await loadNetwork(checkpoint(rec, legacy), { model: 'PWCNet', threads: 2 });
      const got = await net.forward({ reference: img('a'), query: img('b') });
      expect(got.flowEstimates[4]!.data).toEqual(want.flowEstimates[4]!.data);
    }
  }, 60_000);

  it("the install issue's fixture checkpoints are read, then refused strictly (they hold a few tensors only)", async () => {
    const dir = path.join(REPO, 'test', 'fixtures', 'checkpoints');
    await rejects(
      loadNetwork(path.join(dir, 'glunet_gocor_like.pth'), { model: 'GLUNet_GOCor' }),
      'ERR_GOCOR_PARAMS',
      /network tensor .* (is missing|has shape)|unexpected network tensor/,
    );
    await rejects(
      loadNetwork(path.join(dir, 'pwcnet_gocor_like.pth.tar'), { model: 'PWCNet_GOCor' }),
      'ERR_GOCOR_PARAMS',
      /network tensor conv6_0\.0\.weight is missing/,
    );
  });

  it('a missing tensor is ERR_GOCOR_PARAMS naming it', async () => {
    const r = pwc();
    delete r['conv3_2.0.bias'];
    await rejects(loadNetwork(r, { model: 'PWCNet' }), 'ERR_GOCOR_PARAMS', /conv3_2\.0\.bias is missing/);
  });
  it('an unexpected tensor is ERR_GOCOR_PARAMS naming it', async () => {
    const r = pwc();
    r['local_corr_6.filter_initializer.scaling'] = { shape: [1], data: Float32Array.of(1) };
    await rejects(loadNetwork(r, { model: 'PWCNet' }), 'ERR_GOCOR_PARAMS', /unexpected .*local_corr_6/);
  });
  it('a mis-shaped tensor is ERR_GOCOR_PARAMS naming it and both shapes', async () => {
    const r = pwc();
    r['upfeat5.weight'] = { shape: [661, 2, 4, 2], data: new Float32Array(661 * 16) };
    await rejects(
      loadNetwork(r, { model: 'PWCNet' }),
      'ERR_GOCOR_PARAMS',
      /upfeat5\.weight has shape \[661, 2, 4, 2\].*\[661, 2, 4, 4\]/,
    );
  });
  it('a non-finite weight is ERR_GOCOR_PARAMS', async () => {
    const r = pwc();
    (r['conv1a.0.weight'] as TensorRecord).data[5] = Number.NaN;
    await rejects(loadNetwork(r, { model: 'PWCNet' }), 'ERR_GOCOR_PARAMS', /conv1a\.0\.weight holds NaN at element 5/);
  });
  it('a PWC-Net checkpoint is not a PWC-Net-GOCor one (its GOCor tensors are missing)', async () => {
    await rejects(loadNetwork(pwc(), { model: 'PWCNet_GOCor' }), 'ERR_GOCOR_PARAMS', /local_corr_6\..* is missing/);
  });
  it('bad options are ERR_GOCOR_INVALID_ARG naming them', async () => {
    await rejects(loadNetwork(pwc(), { model: 'FlowNet' as NetworkModel }), 'ERR_GOCOR_INVALID_ARG', /options\.model/);
    await rejects(loadNetwork(pwc(), { model: 'PWCNet', numIterLocal: 99 }), 'ERR_GOCOR_INVALID_ARG', /numIterLocal/);
  });

  // The device is resolved once, by loadNetwork: 'cpu' and 'auto' (no GPU here, and no layer's CUDA
  // twin has passed GPU parity yet) give a CPU network whose results say so and agree to the bit;
  // 'cuda' without a usable GPU is ERR_GOCOR_CUDA_UNAVAILABLE at load, with the probe's reason.
  it("device: resolved once at load; 'cuda' without a GPU rejects, 'auto' falls back to the CPU", async () => {
    const img = (seed: string) => ({
      data: stream(seed, 3 * 64 * 64).map((v) => 0.5 + 0.5 * v),
      shape: [1, 3, 64, 64],
    });
    const cpu = await loadNetwork(pwc(), { model: 'PWCNet', device: 'cpu', threads: 1 });
    const auto = await loadNetwork(pwc(), { model: 'PWCNet', device: 'auto', threads: 1 });
    expect(cpu.device).toBe('cpu');
    expect(auto.device).toBe('cpu');
    const a = await cpu.forward({ reference: img('a'), query: img('b') });
    const b = await auto.forward({ reference: img('a'), query: img('b') });
    expect(a.device).toBe('cpu');
    expect(b.device).toBe('cpu');
    expect(b.flowEstimates[4]!.data).toEqual(a.flowEstimates[4]!.data);
    if (backends().cuda.available) {
      expect((await loadNetwork(pwc(), { model: 'PWCNet', device: 'cuda' })).device).toBe('cpu');
      return;
    }
    await rejects(
      loadNetwork(pwc(), { model: 'PWCNet', device: 'cuda' }),
      'ERR_GOCOR_CUDA_UNAVAILABLE',
      /device 'cuda' was requested but CUDA is unavailable: \S/,
    );
    await rejects(
      loadNetwork(pwc(), { model: 'PWCNet', device: 'gpu' as 'cuda' }),
      'ERR_GOCOR_INVALID_ARG',
      /options\.device/,
    );
  }, 60_000);

  it('forward: shapes of every estimate at 128x192, batch 2; bad sizes are ERR_GOCOR_SHAPE', async () => {
    const net = await loadNetwork(pwc(), { model: 'PWCNet', threads: 2 });
    const img = (seed: string) => ({
      data: stream(seed, 2 * 3 * 128 * 192).map((v) => 0.5 + 0.5 * v),
      shape: [2, 3, 128, 192],
    });
    const r = await net.forward({ reference: img('a'), query: img('b') });
    expect(r.flowEstimates.map((e) => e.shape)).toEqual([
      [2, 2, 2, 3],
      [2, 2, 4, 6],
      [2, 2, 8, 12],
      [2, 2, 16, 24],
      [2, 2, 32, 48],
    ]);
    // Batch elements never interact: element 1 alone gives element 1's flow.
    const one = (t: { data: Float32Array }) => ({ data: t.data.slice(3 * 128 * 192), shape: [1, 3, 128, 192] });
    const r1 = await net.forward({ reference: one(img('a')), query: one(img('b')) });
    const last = r.flowEstimates[4]!.data;
    expect(Array.from(r1.flowEstimates[4]!.data)).toEqual(Array.from(last.slice(last.length / 2)));
    const bad = { data: new Float32Array(3 * 100 * 192), shape: [1, 3, 100, 192] };
    await rejects(net.forward({ reference: bad, query: bad }), 'ERR_GOCOR_SHAPE', /multiples of 64/);
    await rejects(
      net.forward({ reference: img('a'), query: { data: new Float32Array(5), shape: [1, 3, 128, 192] } }),
      'ERR_GOCOR_SHAPE',
      /inputs\.query\.data/,
    );
  }, 60_000);
});

describe('official networks: match (pre- and post-processing around forward)', () => {
  const ruleWeights = (model: NetworkModel) =>
    weights(model, {
      files: {},
      state_dict: networkTensors(model).map((t) => [t.name, t.shape] as [string, number[]]),
    });
  // An 8-bit RGB image (values k / 255) with smooth structure, and the same shifted.
  const image = (H: number, W: number, shift: number) => {
    const data = new Float32Array(3 * H * W);
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          const v = 128 + 60 * Math.sin((x + shift) / (7 + c)) + 50 * Math.cos(y / (5 + 2 * c));
          data[(c * H + y) * W + x] = Math.round(v) / 255;
        }
    return { data, channels: 3, height: H, width: W };
  };
  // Straightforward bilinear resize (align_corners False) of a (2, h, w) flow, channels scaled.
  const upsample = (f: Float32Array, h: number, w: number, H: number, W: number, sx: number, sy: number) => {
    const out = new Float32Array(2 * H * W);
    const src = (o: number, s: number, n: number) => Math.max(0, (o + 0.5) * (n / s) - 0.5);
    for (let c = 0; c < 2; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          const fy = src(y, H, h);
          const fx = src(x, W, w);
          const y0 = Math.min(Math.floor(fy), h - 1);
          const x0 = Math.min(Math.floor(fx), w - 1);
          const y1 = Math.min(y0 + 1, h - 1);
          const x1 = Math.min(x0 + 1, w - 1);
          const ly = fy - y0;
          const lx = fx - x0;
          const at = (yy: number, xx: number) => f[(c * h + yy) * w + xx] as number;
          const v =
            (1 - ly) * ((1 - lx) * at(y0, x0) + lx * at(y0, x1)) + ly * ((1 - lx) * at(y1, x0) + lx * at(y1, x1));
          out[(c * H + y) * W + x] = v * (c === 0 ? sx : sy);
        }
    return out;
  };
  const maxDiff = (a: Float32Array, b: Float32Array) =>
    a.reduce((m, v, i) => Math.max(m, Math.abs(v - (b[i] as number))), 0);

  it('PWC-Net: 20 x the upsampled final estimate of forward(reference = BGR(a), query = BGR(b))', async () => {
    const net = await loadNetwork(ruleWeights('PWCNet'), { model: 'PWCNet', threads: 2 });
    const H = 128;
    const W = 192;
    const a = image(H, W, 0);
    const b = image(H, W, 3);
    const bgr = (im: { data: Float32Array }) => {
      const P = H * W;
      const d = new Float32Array(3 * P);
      for (let c = 0; c < 3; c++) d.set(im.data.subarray((2 - c) * P, (3 - c) * P), c * P);
      return { data: d, shape: [1, 3, H, W] };
    };
    const f = await net.forward({ reference: bgr(a), query: bgr(b) });
    const last = f.flowEstimates[4]!;
    const want = upsample(
      last.data.map((v) => 20 * v),
      last.shape[2],
      last.shape[3],
      H,
      W,
      1,
      1,
    );
    const got = await net.match(a, b);
    expect([got.width, got.height]).toEqual([W, H]);
    expect(maxDiff(got.data, want)).toBeLessThan(1e-4);
    // outputShape: the same flow resized, its vectors scaled to the new grid.
    const half = await net.match(a, b, { outputShape: { width: 96, height: 64 } });
    const wantHalf = upsample(
      last.data.map((v) => 20 * v),
      last.shape[2],
      last.shape[3],
      64,
      96,
      0.5,
      0.5,
    );
    expect(maxDiff(half.data, wantHalf)).toBeLessThan(1e-4);
  }, 60_000);

  it('GLU-Net: at 256x256 both streams are the ImageNet-normalised images; flow1 upsampled x4', async () => {
    const net = await loadNetwork(ruleWeights('GLUNet'), { model: 'GLUNet', threads: 2 });
    const a = image(256, 256, 0);
    const b = image(256, 256, 4);
    const norm = (im: { data: Float32Array }) => {
      const mean = [0.485, 0.456, 0.406];
      const std = [0.229, 0.224, 0.225];
      const P = 256 * 256;
      const d = new Float32Array(3 * P);
      for (let i = 0; i < 3 * P; i++) {
        const c = Math.floor(i / P);
        d[i] = (Math.fround(Math.round((im.data[i] as number) * 255) / 255) - (mean[c] as number)) / (std[c] as number);
      }
      return { data: d, shape: [1, 3, 256, 256] };
    };
    const f = await net.forward({ target: norm(a), source: norm(b), target256: norm(a), source256: norm(b) });
    const last = f.flowEstimates[1]!;
    const want = upsample(last.data, last.shape[2], last.shape[3], 256, 256, 1, 1);
    const got = await net.match(a, b);
    expect(maxDiff(got.data, want)).toBeLessThan(1e-3);
    // Different sizes: the flow is on a's grid.
    const small = await net.match(image(200, 240, 0), b);
    expect([small.width, small.height]).toEqual([240, 200]);
    expect(small.data.every(Number.isFinite)).toBe(true);
  }, 120_000);
});

describe.skipIf(!cliBuilt())('official networks: the CLI (gocor match --network FILE --model NAME)', () => {
  const dir = tempDir('gocor-net-cli-');
  it('writes the flow of Network.match on the same images, from a safetensors file', async () => {
    const rec: Record<string, TensorRecord> = {};
    for (const { name, shape } of networkTensors('PWCNet')) {
      rec[name] = {
        shape,
        data: stream(
          name,
          shape.reduce((x, y) => x * y, 1),
        ).map((v) => 0.05 * v),
      };
    }
    const file = path.join(dir, 'pwcnet.safetensors');
    writeFileSync(file, encodeSafetensors(rec));
    const a = path.join(dir, 'a.png');
    const b = path.join(dir, 'b.png');
    await writeShiftedPair(texture(200, 200, 7), 200, 128, { dx: 3, dy: -2 }, a, b);
    const out = path.join(dir, 'out');
    const r = await runCli(['match', a, b, '-o', out, '--network', file, '--model', 'PWCNet', '--threads', '2']);
    expect(r.stderr).toMatch(/128x128 flow/);
    expect(r.code).toBe(0);
    const result = JSON.parse(readFileSync(path.join(out, 'result.json'), 'utf8'));
    expect(result.status).toBe('ok');
    expect(result.method).toBe('PWCNet');
    expect(result.options.network).toEqual({ file, model: 'PWCNet' });
    const flo = readFloFile(path.join(out, 'flow.flo'));
    const net = await loadNetwork(file, { model: 'PWCNet', threads: 2 });
    const want = await net.match(a, b);
    let worst = 0;
    for (let i = 0; i < 128 * 128; i++) {
      worst = Math.max(worst, Math.abs((flo.u[i] as number) - (want.data[i] as number)));
      worst = Math.max(worst, Math.abs((flo.v[i] as number) - (want.data[128 * 128 + i] as number)));
    }
    expect(worst).toBeLessThan(1e-5);
    const bad = await runCli(['match', a, b, '-o', out, '--network', file]);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/ERR_GOCOR_INVALID_ARG: --network FILE and --model NAME go together/);
  }, 120_000);
});

describe("official networks: memory (issue 15: at most 3x the weights plus the largest level's activations)", () => {
  // The loaded network keeps every parameter once, in one layout (the per-tap and Winograd forms
  // of the convolutions are derived per call): its bytes are the checkpoint's float32 bytes, less
  // the batch norms folded from four vectors to two, plus the network object itself (its GOCor
  // scalars and the layers' shapes, a few KiB).
  for (const model of ['PWCNet', 'PWCNet_GOCor', 'GLUNet', 'GLUNet_GOCor'] as NetworkModel[]) {
    it(`${model}: retainedBytes is the checkpoint's bytes less the folded batch norms (one layout per weight)`, async () => {
      const rec: Record<string, TensorRecord> = {};
      let bytes = 0;
      let folded = 0;
      for (const { name, shape } of networkTensors(model)) {
        if (name.endsWith('num_batches_tracked')) continue;
        const n = shape.reduce((a, b) => a * b, 1);
        rec[name] = { shape, data: stream(name, n).map((v) => 0.01 * v) };
        bytes += 4 * n;
        if (name.endsWith('.running_mean')) folded += 2 * 4 * n;
      }
      const net = await loadNetwork(rec, { model });
      const params = bytes - folded;
      expect(bytes).toBeGreaterThan(30e6);
      expect(net.retainedBytes).toBeGreaterThanOrEqual(params);
      expect(net.retainedBytes).toBeLessThanOrEqual(params + 64 * 1024);
    }, 60_000);
  }
});
