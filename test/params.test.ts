import { mkdtempSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { defaultGlobalParams, defaultLocalParams, GocorError, loadParams, saveParams } from '../lib';
import { encodeSafetensors } from '../lib/params';

// Spec 3.2: initial label and mask-logit weights, independently recomputed here in float64.
const d = Array.from({ length: 10 }, (_, k) => 0.5 * k);
const labelInit = d.map((x) => Math.exp(-(x * x) / 2) - Math.exp(-(4.5 * 4.5) / 2));
const maskInit = d.map((x) => 4 * Math.tanh(2 - x));

describe('params: defaults (spec 3.2, 4.7, 5.6)', () => {
  it('global defaults', () => {
    const p = defaultGlobalParams(32);
    expect(p.targetFg).toEqual(new Float32Array(32).fill(1));
    expect(p.targetBg).toEqual(new Float32Array(32));
    expect(p.logStepLength).toBe(0);
    expect(p.filterReg).toBeCloseTo(1e-2, 9);
    expect(p.steplengthReg).toBe(0);
    expect([p.regInterDim, p.regOutputDim]).toEqual([16, 16]);
    p.label.forEach((v, k) => {
      expect(v).toBeCloseTo(labelInit[k]!, 6);
    });
    p.maskLogit.forEach((v, k) => {
      expect(v).toBeCloseTo(maskInit[k]!, 5);
    });
    expect(p.weight).toEqual(new Float32Array(10).fill(1));
    // R_θ ~ N(0, 1e-3): sample std of 16·9 + 16·16·9 draws within 15% of 1e-3, mean near 0; deterministic per seed.
    const w = [...p.regWeight1, ...p.regWeight2];
    const mean = w.reduce((a, b) => a + b, 0) / w.length;
    const std = Math.sqrt(w.reduce((a, b) => a + (b - mean) ** 2, 0) / w.length);
    expect(Math.abs(mean)).toBeLessThan(2e-4);
    expect(std).toBeGreaterThan(0.85e-3);
    expect(std).toBeLessThan(1.15e-3);
    expect(defaultGlobalParams(32).regWeight2).toEqual(p.regWeight2);
    expect(defaultGlobalParams(32, 1).regWeight2).not.toEqual(p.regWeight2);
  });
  it('local defaults', () => {
    const p = defaultLocalParams();
    expect(p.scaling).toBe(1);
    expect(p.filterReg).toBeCloseTo(1e-2, 9);
    p.label.forEach((v, k) => {
      expect(v).toBeCloseTo(labelInit[k]!, 6);
    });
  });
});

describe('params: safetensors', () => {
  it('round trip keeps official names and values; prefixes are accepted', async () => {
    const g = defaultGlobalParams(8, 3);
    const l = { ...defaultLocalParams(), scaling: 2.5 };
    const dir = mkdtempSync(path.join(os.tmpdir(), 'gocor-params-'));
    const file = path.join(dir, 'p.safetensors');
    await saveParams({ global: g, local: l, localLevels: { '3': { ...l, filterReg: 0.5 } } }, file);
    const bytes = readFileSync(file);
    const header = JSON.parse(bytes.subarray(8, 8 + Number(bytes.readBigUInt64LE(0))).toString());
    expect(Object.keys(header)).toContain('corr.corr_module.filter_optimizer.reg_layer.weight2');
    expect(Object.keys(header)).toContain('local_corr.filter_initializer.scaling');
    expect(Object.keys(header)).toContain('local_corr_3.filter_optimizer.filter_reg');
    expect(header['corr.corr_module.filter_optimizer.reg_layer.weight2'].shape).toEqual([16, 16, 3, 3]);
    const back = await loadParams(file);
    expect(back.global!.regWeight2).toEqual(g.regWeight2);
    expect(back.global!.targetFg).toEqual(g.targetFg);
    expect(back.local!.scaling).toBe(2.5);
    expect(back.localLevels['3']!.filterReg).toBe(0.5);
  });

  it('reads F64 tensors and unprefixed names', async () => {
    const f64 = (vals: number[]) => new Float64Array(vals);
    const tensors: Array<[string, number[], Float64Array]> = [
      ['filter_initializer.scaling', [1], f64([3])],
      ['filter_optimizer.log_step_length', [1], f64([0.25])],
      ['filter_optimizer.filter_reg', [1], f64([0.02])],
      ['filter_optimizer.label_map_predictor.weight', [1, 10, 1, 1], f64(labelInit)],
      ['filter_optimizer.spatial_weight_predictor.weight', [1, 10, 1, 1], f64(Array(10).fill(1))],
      ['filter_optimizer.target_mask_predictor.0.weight', [1, 10, 1, 1], f64(maskInit)],
    ];
    const header: Record<string, unknown> = {};
    let off = 0;
    for (const [n, shape, data] of tensors) {
      header[n] = { dtype: 'F64', shape, data_offsets: [off, off + data.byteLength] };
      off += data.byteLength;
    }
    const h = Buffer.from(JSON.stringify(header));
    const buf = Buffer.concat([Buffer.alloc(8), h, ...tensors.map(([, , d]) => Buffer.from(d.buffer))]);
    buf.writeBigUInt64LE(BigInt(h.length), 0);
    const p = await loadParams(buf);
    expect(p.local!.scaling).toBe(3);
    expect(p.local!.logStepLength).toBe(0.25);
    expect(p.local!.maskLogit[0]).toBeCloseTo(maskInit[0]!, 5);
  });

  it('names the tensor on wrong names, shapes and non-finite values', async () => {
    const g = defaultGlobalParams(4);
    const good = (await import('../lib/params')).paramsToTensors(g);
    const bad1 = { ...good, 'corr.corr_module.filter_optimizer.bogus': { shape: [1], data: Float32Array.of(1) } };
    await expect(loadParams(bad1)).rejects.toThrow(
      /unknown parameter tensor corr\.corr_module\.filter_optimizer\.bogus/,
    );
    const bad2 = {
      ...good,
      'corr.corr_module.filter_optimizer.reg_layer.weight1': { shape: [16, 2, 3, 3], data: new Float32Array(288) },
    };
    await expect(loadParams(bad2)).rejects.toThrow(/reg_layer\.weight1 has shape \[16, 2, 3, 3\]/);
    const nan = Float32Array.from(good['corr.corr_module.filter_initializer.target_fg']!.data);
    nan[2] = Number.NaN;
    const bad3 = { ...good, 'corr.corr_module.filter_initializer.target_fg': { shape: [4], data: nan } };
    await expect(loadParams(bad3)).rejects.toThrow(/target_fg holds a non-finite value/);
    const { 'corr.corr_module.filter_optimizer.filter_reg': _, ...missing } = good;
    await expect(loadParams(missing)).rejects.toThrow(/corr\.corr_module\.filter_optimizer\.filter_reg is missing/);
    const err = await loadParams(encodeSafetensors(bad1)).catch((e) => e);
    expect(err).toBeInstanceOf(GocorError);
    expect(err.code).toBe('ERR_GOCOR_PARAMS');
    await expect(loadParams(Buffer.from('not a safetensors file'))).rejects.toMatchObject({ code: 'ERR_GOCOR_PARAMS' });
    await expect(loadParams('/nonexistent.safetensors')).rejects.toMatchObject({ code: 'ERR_GOCOR_IO' });
  });
});
