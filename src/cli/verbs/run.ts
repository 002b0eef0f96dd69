import { flag, int, str, type ParsedArgs, type VerbSpec } from '../args.js';
import { UsageError } from '../args.js';
import { commonOptions } from '../args.js';
import { fanoutExitCodes, fanoutLimit, interruptible, openFleet, targetOptions, targetSpec } from '../fanout-common.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'run',
  summary: 'run a command (or a script) on many nodes and collect its output',
  usage: 'run [-w SET] [-x SET] [-b] [-o DIR] [-t SECONDS] [--fanout N] [--fail-fast] [--json|--ndjson] [-S] [--stdin] [--shell] -- CMD [ARGS...] | --script FILE [-- ARGS...]',
  options: [
    ...targetOptions,
    { name: 'gather', short: 'b', type: 'boolean', description: 'one block per group of nodes with identical output and exit status (clush -b)' },
    { name: 'outdir', short: 'o', type: 'string', value: 'DIR', description: 'write DIR/NODE/stdout, stderr and rc' },
    { name: 'timeout', short: 't', type: 'string', value: 'SECONDS', description: "kill each node's command (its whole process group) after this" },
    { name: 'kill-grace', type: 'integer', value: 'MS', description: 'after the timeout, SIGTERM then SIGKILL this much later (default 2000)' },
    { name: 'fail-fast', type: 'boolean', description: 'stop every node at the first failure' },
    { name: 'ndjson', type: 'boolean', description: 'one JSON event per line: plan, stdout/stderr lines, exit, summary' },
    commonOptions.json,
    { name: 'maxrc', short: 'S', type: 'boolean', description: 'exit with the largest remote exit code (clush/pdsh -S)' },
    { name: 'stdin', type: 'boolean', description: 'send standard input (read to its end, at most 64 MiB) to every node' },
    { name: 'shell', type: 'boolean', description: 'CMD is one shell command line, run by /bin/sh -c on each node' },
    { name: 'script', type: 'string', value: 'FILE', description: 'copy FILE to every node, run it there (its #! line picks the interpreter), remove it' },
    { name: 'env', short: 'e', type: 'string', multiple: true, value: 'NAME=VALUE', description: 'set a variable for the command (repeatable)' },
    commonOptions.help,
  ],
  command: 'optional',
  details: `The command runs without a shell: its arguments reach it as given, whatever characters they
hold. --shell runs one command line through /bin/sh -c instead. Each node runs it in its work
directory, in a process group of its own, with CORRAL_NODE, CORRAL_RANK and CORRAL_SIZE set.
Output is printed as whole lines prefixed by the node name; a summary goes to standard error.
With --script, output is best kept per node with -o DIR (distsys's run).`,
  exitCodes: fanoutExitCodes,
};

function seconds(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const s = Number(text);
  if (!/^\d+(\.\d+)?$/.test(text) || !Number.isFinite(s) || s <= 0 || s > 7 * 86_400) throw new UsageError(`--timeout takes seconds (e.g. 30 or 0.5), not '${text}'`);
  return Math.max(1, Math.round(s * 1000));
}

async function readStdin(): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of process.stdin) {
    size += (chunk as Buffer).length;
    if (size > 64 * 1024 * 1024) throw new UsageError('--stdin: standard input is over 64 MiB; push it as a file instead');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const outDir = str(args, 'outdir');
  const { readFileSync } = await import('node:fs');
  const path = await import('node:path');
  const { runOnNodes } = await import('../../fanout/run.js');
  const scriptFile = str(args, 'script');
  if (!scriptFile && args.command.length === 0) throw new UsageError('missing command after -- (or --script FILE)');
  if (scriptFile && flag(args, 'shell')) throw new UsageError('--script and --shell exclude each other');
  if (flag(args, 'shell') && args.command.length !== 1) throw new UsageError("--shell takes one command line: quote it, e.g. -- 'ls | wc -l'");
  const modes = ['gather', 'json', 'ndjson'].filter((m) => flag(args, m));
  if (modes.length > 1) throw new UsageError(`--${modes.join(' and --')} exclude each other`);
  const env: Record<string, string> = {};
  for (const pair of (args.options.env as string[] | undefined) ?? []) {
    const eq = pair.indexOf('=');
    if (eq < 1) throw new UsageError(`-e takes NAME=VALUE, not '${pair}'`);
    env[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  let script: { name: string; base64: string } | undefined;
  if (scriptFile) {
    let data: Buffer;
    try {
      data = readFileSync(scriptFile);
    } catch (err) {
      throw new UsageError(`--script ${scriptFile}: cannot read it (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
    }
    script = { name: path.basename(scriptFile), base64: data.toString('base64') };
  }
  const timeoutMs = seconds(str(args, 'timeout'));
  const killGrace = int(args, 'kill-grace');
  const fanout = fanoutLimit(args);
  const stdin = flag(args, 'stdin') ? await readStdin() : undefined;
  const fleet = await openFleet(args, io);
  const interrupt = interruptible();
  try {
    const result = await runOnNodes(
      fleet,
      {
        exec: {
          targets: targetSpec(args),
          exec: {
            argv: args.command,
            ...(flag(args, 'shell') ? { shell: true } : {}),
            ...(timeoutMs !== undefined ? { timeoutMs } : {}),
            ...(killGrace !== undefined ? { killGraceMs: killGrace } : {}),
            ...(script ? { script } : {}),
            env,
          },
          ...(fanout !== undefined ? { fanout } : {}),
          failFast: flag(args, 'fail-fast'),
        },
        ...(stdin ? { stdin } : {}),
        mode: flag(args, 'gather') ? 'gather' : flag(args, 'json') ? 'json' : flag(args, 'ndjson') ? 'ndjson' : 'stream',
        ...(outDir !== undefined ? { outDir } : {}),
        largestCode: flag(args, 'maxrc'),
        signal: interrupt.signal,
      },
      io,
    );
    return result.exitCode;
  } finally {
    interrupt.dispose();
    await fleet.close();
  }
}

export const verb: Verb = { spec, run };
