// The official networks (lib/networks.ts): the golden cases of ../shared/conformance/networks for
// all four networks, with the weights regenerated here from the manifest's WEIGHTS rule (FNV-1a +
// splitmix64 by tensor name; GOCor's own tensors from <network>_gocor_params.safetensors), checked
// against the float64 outputs with the manifest's acceptance rule; strict loading; input checks.
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { GocorError, loadNetwork, type NetworkModel, networkTensors, type TensorRecord } from '../lib';
import { parseSafetensors } from '../lib/params';
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
