#!/usr/bin/env node
/**
 * The gocor command line. Every command prints one clear line on failure
 * (`gocor: ERR_GOCOR_<CODE>: message`) and exits non-zero: 1 failure, 2 usage, 130 interrupted.
 */
import { Command, CommanderError } from 'commander';
import { batchCommand } from './cli/batch-command';
import { benchCommand } from './cli/bench';
import { EXIT, errorLine, examples, usageLine } from './cli/common';
import { correlateCommand } from './cli/correlate';
import { infoCommand } from './cli/info';
import { matchCommand } from './cli/match';
import { queueCommand } from './cli/queue-command';
import { reportCommand } from './cli/report-command';

export function program(): Command {
  const version = (require('../package.json') as { version: string }).version;
  const root = new Command('gocor')
    .description(
      'GOCor (globally optimised correlation volumes, NeurIPS 2020): dense matching of image pairs and correlation volumes',
    )
    .version(version, '-V, --version')
    .addHelpText(
      'after',
      examples([
        'gocor match a.png b.png -o out/            # flow, colour, warped B, confidence, result.json',
        'gocor batch pairs.csv -o runs/ && gocor report runs/',
        'gocor correlate ref.npy query.npy --method gocor-global -o volume.npy',
        'gocor info',
        'gocor <command> --help',
      ]),
    );
  for (const cmd of [
    matchCommand(),
    batchCommand(),
    reportCommand(),
    correlateCommand(),
    infoCommand(),
    benchCommand(),
    queueCommand(),
  ]) {
    root.addCommand(cmd);
  }
  // Usage errors exit with 2 (as most Unix tools do); failures of the work itself with 1.
  const exitOverride = (err: CommanderError) => {
    if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version' || err.code === 'commander.help')
      throw err;
    throw new CommanderError(EXIT.usage, err.code, err.message);
  };
  // commander's own error output (its message, then a hint on a second line) is replaced by main's one line.
  const quiet = { outputError: () => {} };
  root.exitOverride(exitOverride).configureOutput(quiet);
  // Subcommands of subcommands too (`gocor queue add`).
  const nested = (c: Command): Command[] => c.commands.flatMap((sub) => [sub, ...nested(sub)]);
  for (const cmd of nested(root)) cmd.exitOverride(exitOverride).configureOutput(quiet);
  return root;
}

export async function main(argv: string[]): Promise<void> {
  // `gocor ... | head` closes the pipe early: that is the reader's choice, not an error.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? EXIT.ok);
    throw err;
  });
  try {
    await program().parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version were printed by commander; a usage error is the one documented line.
      if (err.code === 'commander.helpDisplayed' || err.code === 'commander.version') process.exitCode = EXIT.ok;
      else {
        process.stderr.write(`${usageLine(err.message)}\n`);
        process.exitCode = err.exitCode;
      }
      return;
    }
    process.stderr.write(`${errorLine(err)}\n`);
    process.exitCode = EXIT.failed;
  }
}

if (require.main === module) void main(process.argv);
