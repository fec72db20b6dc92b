/** What every command shares: option parsers, output helpers and the one-line error format. */

import path from 'node:path';
import { InvalidArgumentError, Option } from 'commander';
import { GocorError } from '../errors';
import type { MatchOptions } from '../match';
import type { NetworkModel } from '../networks';
import type { MatchSettings } from './pair';

/** Exit codes: 0 success; 1 a failure (or, for batch, at least one failed pair); 2 usage; 130 interrupted. */
export const EXIT = { ok: 0, failed: 1, usage: 2, interrupted: 130 } as const;

export function intArg(min: number, max: number): (value: string) => number {
  return (value: string) => {
    const n = Number(value);
    if (!/^\s*-?\d+\s*$/.test(value) || !Number.isInteger(n) || n < min || n > max) {
      throw new InvalidArgumentError(`expected an integer between ${min} and ${max}`);
    }
    return n;
  };
}

/** The library's ranges that the CLI checks while parsing (a usage error, exit 2, not a failure). */
export const RANGES = {
  /** match(): numIter.global / numIter.local. */
  matchIters: [0, 20],
  /** GlobalGOCor / LocalGOCor: numIter. */
  gocorIters: [0, 64],
  /** correlate(): local searchRadius; LocalGOCor's is narrower. */
  correlationRadius: [0, 32],
  gocorRadius: [1, 16],
} as const;

/** "G" or "G,L": steepest-descent iterations of the global and the local GOCor of match. */
export function numIterArg(value: string): { global: number; local?: number } {
  const parts = value.split(',');
  const [lo, hi] = RANGES.matchIters;
  const parse = intArg(lo, hi);
  if (parts.length > 2 || parts.some((p) => p.trim() === ''))
    throw new InvalidArgumentError(`expected K or KGLOBAL,KLOCAL (integers ${lo}..${hi})`);
  return parts.length === 1
    ? { global: parse(parts[0] as string) }
    : { global: parse(parts[0] as string), local: parse(parts[1] as string) };
}

/** "WxH" (or "W,H"). */
export function shapeArg(value: string): { width: number; height: number } {
  const m = /^\s*(\d+)\s*[x,×]\s*(\d+)\s*$/i.exec(value);
  const width = m ? Number(m[1]) : 0;
  const height = m ? Number(m[2]) : 0;
  if (!m || width < 1 || height < 1 || width > 16384 || height > 16384) {
    throw new InvalidArgumentError('expected WIDTHxHEIGHT, e.g. 640x480');
  }
  return { width, height };
}

export function deviceOption(): Option {
  return new Option('--device <device>', 'where to compute').choices(['auto', 'cpu', 'cuda']).default('auto');
}

export function threadsOption(): Option {
  return new Option('--threads <n>', 'CPU threads (default: all)').argParser(intArg(1, 1024));
}

/** The matching options shared by `match` and `batch`. */
export function matchOptionList(): Option[] {
  return [
    new Option(
      '--quality <preset>',
      'speed/accuracy preset: fast (one direction, no occlusion mask), balanced (default), best',
    ).choices(['fast', 'balanced', 'best']),
    new Option('-m, --method <method>', 'GOCor or plain correlation in the same pipeline')
      .choices(['gocor', 'correlation'])
      .default('gocor'),
    new Option('--global-size <n>', 'cells per side of the global stage (default 24)').argParser(intArg(4, 48)),
    new Option(
      '--num-iter <k>',
      'GOCor iterations: K for both stages, or KGLOBAL,KLOCAL (default 3,3; best 3,7)',
    ).argParser(numIterArg),
    new Option(
      '--gocor-params <kind>',
      "GOCor's parameters: fitted to the built-in descriptor, or the spec's initial values (untrained)",
    )
      .choices(['fitted', 'initial'])
      .default('fitted'),
    deviceOption(),
    threadsOption(),
    new Option('--output-shape <WxH>', "size of the output flow (default: A's size); vectors are rescaled").argParser(
      shapeArg,
    ),
    new Option(
      '--confidence <kind>',
      'per-pixel confidence: volume peak ratio, forward-backward consistency (a second match), or none',
    )
      .choices(['peak', 'forwardBackward', 'none'])
      .default('peak'),
    new Option(
      '--similarity-search <mode>',
      'large rotations and zooms: auto (search when the coarse flows are inconsistent), always, or off',
    )
      .choices(['auto', 'always', 'off'])
      .default('auto'),
    new Option(
      '--network <file>',
      'run an official network from its weights (.pth checkpoint or safetensors) instead of the matcher',
    ),
    new Option('--model <name>', 'the network of --network').choices([
      'PWCNet',
      'PWCNet_GOCor',
      'GLUNet',
      'GLUNet_GOCor',
    ]),
    new Option(
      '--allow-svg',
      'decode SVG inputs (refused by default: librsvg embeds the files an SVG references from its folder)',
    ),
  ];
}

export interface MatchCliOptions {
  quality?: 'fast' | 'balanced' | 'best';
  method: 'gocor' | 'correlation';
  globalSize?: number;
  numIter?: { global: number; local?: number };
  gocorParams: 'fitted' | 'initial';
  device: 'auto' | 'cpu' | 'cuda';
  threads?: number;
  outputShape?: { width: number; height: number };
  confidence: 'peak' | 'forwardBackward' | 'none';
  similaritySearch: 'auto' | 'always' | 'off';
  allowSvg?: boolean;
  network?: string;
  model?: NetworkModel;
}

/** The CLI's options as `match` options (the one conversion; the library validates them). */
export function matchSettings(o: MatchCliOptions): MatchSettings {
  const options: MatchOptions = {
    method: o.method,
    device: o.device,
    confidence: o.confidence,
    gocorParams: o.gocorParams,
    similaritySearch: o.similaritySearch === 'off' ? false : o.similaritySearch,
  };
  if (o.quality !== undefined) options.quality = o.quality;
  if (o.globalSize !== undefined) options.globalSize = o.globalSize;
  if (o.numIter) options.numIter = { global: o.numIter.global, local: o.numIter.local ?? o.numIter.global };
  if (o.threads !== undefined) options.threads = o.threads;
  if (o.outputShape) options.outputShape = o.outputShape;
  if ((o.network === undefined) !== (o.model === undefined))
    throw new GocorError('ERR_GOCOR_INVALID_ARG', '--network FILE and --model NAME go together');
  const network = o.network && o.model ? { file: path.resolve(o.network), model: o.model } : undefined;
  return { options, ...(o.allowSvg && { allowSvg: true }), ...(network && { network }) };
}

/** The one error line: `gocor: ERR_GOCOR_X: message`. */
export function errorLine(err: unknown): string {
  if (err instanceof GocorError) return `gocor: ${err.code}: ${err.message}`;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e?.code === 'string' && e.code.startsWith('ERR_GOCOR') ? e.code : 'ERR_GOCOR_INTERNAL';
  return `gocor: ${code}: ${typeof e?.message === 'string' ? e.message : String(err)}`;
}

/** A usage error (commander's message, `error: ...`) as the one error line, code ERR_GOCOR_INVALID_ARG. */
export function usageLine(message: string): string {
  const text = message
    .replace(/^error: /, '')
    .replace(/\s*\n\s*/g, ' ')
    .trim();
  return `gocor: ERR_GOCOR_INVALID_ARG: ${text} (see gocor --help)`;
}

/**
 * SIGINT / SIGTERM for a command that stops after the work in flight: the first signal calls
 * `first`; a second one says so and quits at once (exit 130). Returns the function that removes
 * the handlers.
 */
export function onStopSignals(command: string, first: () => void): () => void {
  let seen = false;
  const onSignal = () => {
    if (seen) {
      process.stderr.write(`gocor ${command}: interrupted again, quitting now\n`);
      process.exit(EXIT.interrupted);
    }
    seen = true;
    first();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return () => {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  };
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

/** Appended to every command's help. */
export function examples(lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  ${l}`).join('\n')}\n`;
}
