// corral's entry point: finds the verb, loads only that verb's module, parses, runs, and turns
// errors into one line on stderr and a documented exit code.

import { CorralError } from '../api/errors.js';
import { parseArgs, renderHelp, UsageError } from './args.js';
import type { CliIO, Verb } from './verb.js';

/** Verb name → module loader. One file per verb under ./verbs/. */
export const verbs: Record<string, () => Promise<{ verb: Verb }>> = {
  agent: () => import('./verbs/agent.js'),
  init: () => import('./verbs/init.js'),
  join: () => import('./verbs/join.js'),
  token: () => import('./verbs/token.js'),
  local: () => import('./verbs/local.js'),
  status: () => import('./verbs/status.js'),
  ping: () => import('./verbs/ping.js'),
  clinit: () => import('./verbs/clinit.js'),
  lock: () => import('./verbs/lock.js'),
  locks: () => import('./verbs/locks.js'),
  tell: () => import('./verbs/tell.js'),
  reload: () => import('./verbs/reload.js'),
  logs: () => import('./verbs/logs.js'),
  run: () => import('./verbs/run.js'),
  mkdir: () => import('./verbs/mkdir.js'),
  push: () => import('./verbs/push.js'),
  scatter: () => import('./verbs/scatter.js'),
  gather: () => import('./verbs/gather.js'),
};


function makeIO(): CliIO {
  const isTTY = process.stdout.isTTY === true;
  return {
    stdout: (t) => void process.stdout.write(t),
    stderr: (t) => void process.stderr.write(t),
    env: process.env,
    isTTY,
    color: isTTY && !process.env.NO_COLOR && process.env.TERM !== 'dumb',
  };
}

async function generalHelp(): Promise<string> {
  const rows: string[] = [];
  for (const [name, load] of Object.entries(verbs)) {
    const { verb } = await load();
    rows.push(`  ${name.padEnd(10)}${verb.spec.summary}`);
  }
  return [
    'Usage: corral <verb> [options]',
    '',
    'corral is a cluster manager: locks, cluster-wide init, fan-out and high availability.',
    '',
    'Verbs:',
    ...rows,
    '',
    'Run `corral help VERB` for a verb\'s options and exit codes; `corral --version` for the version.',
    'Client verbs find the cluster through --config FILE or $CORRAL_CONFIG.',
    '',
  ].join('\n');
}

export async function main(argv: readonly string[], io: CliIO): Promise<number> {
  const [first, ...rest] = argv;
  if (first === undefined || first === '--help' || first === '-h') {
    io.stdout(await generalHelp());
    return first === undefined ? 2 : 0;
  }
  if (first === '--version' || first === '-V' || first === 'version') {
    // Loaded here only: every module on the start path costs every command (corral lock above all).
    const { packageVersion } = await import('./version.js');
    io.stdout(`corral ${packageVersion()}\n`);
    return 0;
  }
  if (first === 'help') {
    if (rest.length === 0) {
      io.stdout(await generalHelp());
      return 0;
    }
    const load = Object.hasOwn(verbs, rest[0] as string) ? verbs[rest[0] as string] : undefined;
    if (!load || rest.length > 1) {
      io.stderr(`corral: no such verb '${rest.join(' ')}'; run 'corral help' for the list\n`);
      return 2;
    }
    io.stdout(renderHelp((await load()).verb.spec));
    return 0;
  }
  const load = Object.hasOwn(verbs, first) ? verbs[first] : undefined;
  if (!load) {
    io.stderr(`corral: unknown verb '${first}'\n${await generalHelp()}`);
    return 2;
  }
  const { verb } = await load();
  try {
    const args = parseArgs(verb.spec, rest);
    if (args.options.help === true) {
      io.stdout(renderHelp(verb.spec));
      return 0;
    }
    return await verb.run(args, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`corral ${first}: ${err.message}\nUsage: corral ${verb.spec.usage}\nRun 'corral help ${first}' for details.\n`);
      return verb.spec.usageExitCode ?? 2;
    }
    if (err instanceof CorralError) {
      io.stderr(`corral ${first}: ${err.message} [${err.code}]\n`);
      return err.exitCode;
    }
    const e = err instanceof Error ? err : new Error(String(err));
    io.stderr(`corral ${first}: internal error: ${e.message} [INTERNAL]\n${process.env.CORRAL_DEBUG ? `${e.stack}\n` : ''}`);
    return 70;
  }
}

const isEntry = process.argv[1] !== undefined && /(?:^|\/)(?:corral|main\.js)$/.test(process.argv[1]);
if (isEntry) {
  // A reader that goes away (`corral status | head -1`) is not an error.
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw err;
    });
  }
  main(process.argv.slice(2), makeIO()).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`corral: internal error: ${String(err)}\n`);
      process.exitCode = 70;
    },
  );
}
