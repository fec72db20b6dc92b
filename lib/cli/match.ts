/** `gocor match A B -o OUTDIR`: one pair to flow.flo, flow.png, warped.png, confidence.png and result.json. */
import path from 'node:path';
import { Command, Option } from 'commander';
import { GocorError } from '../errors';
import { EXIT, examples, type MatchCliOptions, matchOptionList, matchSettings, printJson } from './common';
import { runPair } from './pair';

interface Opts extends MatchCliOptions {
  out: string;
  gt?: string;
  json?: boolean;
  quiet?: boolean;
}

export function matchCommand(): Command {
  const cmd = new Command('match')
    .summary('dense flow from image A to image B')
    .description(
      'Matches image A to image B and writes into OUTDIR: flow.flo (Middlebury), flow.png (colour wheel), ' +
        'warped.png (B warped onto A), confidence.png (8-bit) and result.json (sizes, method, options, ' +
        'timings, device; written last). Flow lives on the grid of A and points into B: ' +
        'A(x) corresponds to B(x + flow(x)), x right, y down.',
    )
    .argument('<a>', 'first image (the flow is on its grid)')
    .argument('<b>', 'second image')
    .requiredOption('-o, --out <dir>', 'output folder (created if needed)');
  for (const o of matchOptionList()) cmd.addOption(o);
  cmd
    .addOption(
      new Option(
        '--gt <file>',
        'ground-truth flow (.flo, .npy) or disparity .png of A: adds AEPE and PCK to result.json',
      ),
    )
    .option('--json', 'print result.json to stdout')
    .option('-q, --quiet', 'print nothing on success')
    .addHelpText(
      'after',
      examples([
        'gocor match examples/basketball1.png examples/basketball2.png -o out/',
        'gocor match a.jpg b.jpg -o out/ --method correlation --device cpu --threads 4',
        'gocor match a.png b.png -o out/ --num-iter 5,3 --output-shape 640x480 --json',
      ]),
    )
    .action(async (a: string, b: string, opts: Opts) => {
      const out = path.resolve(opts.out);
      const rec = await runPair(
        { a: path.resolve(a), b: path.resolve(b), ...(opts.gt && { gt: path.resolve(opts.gt) }) },
        out,
        matchSettings(opts),
      );
      if (rec.status !== 'ok') {
        const e = rec.error as { code: string; message: string };
        throw new GocorError(e.code as GocorError['code'], e.message);
      }
      if (opts.json) printJson(rec);
      else if (!opts.quiet) {
        const m = rec.metrics
          ? `, AEPE ${rec.metrics.aepe.toFixed(3)} px, PCK-1/3/5 ${[rec.metrics.pck1, rec.metrics.pck3, rec.metrics.pck5].map((v) => (100 * v).toFixed(1)).join('/')} %`
          : '';
        process.stderr.write(
          `gocor match: ${rec.flow?.width}x${rec.flow?.height} flow (${rec.method}, ${rec.device}) in ${((rec.timings?.totalMs ?? 0) / 1000).toFixed(2)} s${m}; wrote ${out}\n`,
        );
      }
      process.exitCode = EXIT.ok;
    });
  return cmd;
}
