import { commonOptions, flag, type ParsedArgs, type VerbSpec } from '../args.js';
import { fanoutExitCodes, fanoutLimit, interruptible, openFleet, targetOptions, targetSpec } from '../fanout-common.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'push',
  summary: 'copy files and directories to many nodes, checksummed; re-runs send only what is missing',
  usage: 'push [-w SET] [-x SET] [--json] SRC... DEST',
  options: [...targetOptions, commonOptions.json, commonOptions.help],
  positionals: { min: 2, max: 100_000, names: 'SRC... DEST' },
  details: `DEST is a directory on every node (created with its parents; relative to the agent's work
directory unless absolute). Each SRC lands inside it under its own name; a SRC directory is
copied whole, and "DIR/" copies only its contents. Every file is hashed (SHA-256) here, streamed
once for all nodes, hashed again as it is written on each node, written to a temporary name and
renamed into place only when the hashes match; its mode is kept. Files a node already holds with
the same hash are skipped, so a re-run after a failure sends only what is missing.`,
  exitCodes: fanoutExitCodes.filter(([c]) => c !== 3),
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { planSources, transfer, transferExit, renderReports } = await import('../../fanout/transfer.js');
  const { bytesText } = await import('../../fanout/progress.js');
  const sources = args.positionals.slice(0, -1);
  const dest = args.positionals[args.positionals.length - 1] as string;
  const plan = await planSources(sources);
  for (const s of plan.skipped) io.stderr(`corral push: skipped ${s}: not a regular file or directory\n`);
  const fleet = await openFleet(args, io);
  const interrupt = interruptible();
  try {
    const { nodes } = await fleet.targets(targetSpec(args));
    const fanout = fanoutLimit(args);
    const reports = await transfer(fleet, nodes, plan, () => nodes, {
      dest,
      signal: interrupt.signal,
      label: 'push',
      ...(fanout ? { fanout } : {}),
      ...(process.stdout.isTTY && process.stderr.isTTY && !flag(args, 'json') ? { progress: { isTTY: true, write: (t: string) => io.stderr(t) } } : {}),
    });
    const code = transferExit(reports, interrupt.signal.aborted);
    if (flag(args, 'json')) io.stdout(JSON.stringify({ dest, files: plan.files.length, nodes: reports, exitCode: code }, null, 2) + '\n');
    else io.stdout(renderReports(reports, bytesText));
    return code;
  } finally {
    interrupt.dispose();
    await fleet.close();
  }
}

export const verb: Verb = { spec, run };
