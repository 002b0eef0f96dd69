import { commonOptions, flag, type ParsedArgs, type VerbSpec } from '../args.js';
import { fanoutExitCodes, fanoutLimit, interruptible, openFleet, targetOptions, targetSpec } from '../fanout-common.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'gather',
  summary: 'bring a file or directory from every node into LOCALDIR/NODE/, checksummed',
  usage: 'gather [-w SET] [-x SET] [--json] REMOTE_PATH LOCALDIR',
  options: [...targetOptions, commonOptions.json, commonOptions.help],
  positionals: { min: 2, max: 2, names: 'REMOTE_PATH LOCALDIR' },
  details: `Each node lists REMOTE_PATH (a file, or a directory tree) with every file's SHA-256; the files
come back into LOCALDIR/NODE/<name of REMOTE_PATH>/..., are hashed as they arrive and kept only
when the hash matches. A relative REMOTE_PATH is relative to each agent's work directory. Files
already here with the same hash are not fetched again.`,
  exitCodes: fanoutExitCodes.filter(([c]) => c !== 3),
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { gather, transferExit } = await import('../../fanout/transfer.js');
  const { bytesText } = await import('../../fanout/progress.js');
  const [remote, localDir] = args.positionals as [string, string];
  const fleet = await openFleet(args, io);
  const interrupt = interruptible();
  try {
    const { nodes } = await fleet.targets(targetSpec(args));
    const fanout = fanoutLimit(args);
    const reports = await gather(fleet, nodes, remote, localDir, {
      signal: interrupt.signal,
      ...(fanout ? { fanout } : {}),
      ...(process.stdout.isTTY && process.stderr.isTTY && !flag(args, 'json') ? { progress: { isTTY: true, write: (t: string) => io.stderr(t) } } : {}),
    });
    const code = transferExit(reports, interrupt.signal.aborted);
    if (flag(args, 'json')) io.stdout(JSON.stringify({ remote, localDir, nodes: reports, exitCode: code }, null, 2) + '\n');
    else {
      const width = Math.max(0, ...reports.map((r) => r.node.length));
      for (const r of reports) {
        const head = `${r.node}:`.padEnd(width + 1);
        if (r.unreachable !== undefined) io.stdout(`${head} UNREACHABLE: ${r.unreachable}\n`);
        else if (r.failed.length > 0) io.stdout(`${head} FAILED ${r.failed.length}, ${r.files} fetched: ${r.failed[0]?.error ?? ''}\n`);
        else io.stdout(`${head} ok, ${r.files} fetched (${bytesText(r.bytes)}), ${r.unchanged} unchanged\n`);
      }
    }
    return code;
  } finally {
    interrupt.dispose();
    await fleet.close();
  }
}

export const verb: Verb = { spec, run };
