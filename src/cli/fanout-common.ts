// What every fan-out verb shares: the node selectors (-w, -x, -a), the transport choice (the
// cluster's agents, or --ssh with a hosts file), --fanout, and Ctrl-C handling. Imports nothing
// heavy at load time.

import { setMaxListeners } from 'node:events';
import type { TargetSpec } from '../api/fanout-wire.js';
import { commonOptions, flag, int, str, type OptionSpec, type ParsedArgs } from './args.js';
import { UsageError } from './args.js';
import type { CliIO } from './verb.js';
import type { Fleet } from '../fanout/fleet.js';

export const targetOptions: OptionSpec[] = [
  { name: 'nodes', short: 'w', type: 'string', multiple: true, value: 'SET', description: 'target nodes: n[1-4,7],web1,@group (repeatable; default: all)' },
  { name: 'exclude', short: 'x', type: 'string', multiple: true, value: 'SET', description: 'leave these nodes out (wins over -w)' },
  { name: 'all', short: 'a', type: 'boolean', description: 'every node (the default when -w is not given)' },
  { name: 'fanout', short: 'f', type: 'integer', value: 'N', description: 'nodes worked on at once (default 64)' },
  commonOptions.config,
  { name: 'via', type: 'string', value: 'NODE', description: "relay through this node's agent (default: this machine's agent, else the first that answers)" },
  { name: 'ssh', type: 'boolean', description: 'use the system ssh (BatchMode) instead of agents; hosts from --hosts' },
  { name: 'hosts', type: 'string', value: 'FILE', description: 'with --ssh: one [user@]host[:port] per line, # comments' },
];

function joined(args: ParsedArgs, name: string): string | undefined {
  const v = args.options[name];
  if (v === undefined) return undefined;
  return (Array.isArray(v) ? v : [v]).map(String).join(',');
}

export function targetSpec(args: ParsedArgs): TargetSpec {
  const nodes = joined(args, 'nodes');
  const exclude = joined(args, 'exclude');
  if (flag(args, 'all') && nodes !== undefined) throw new UsageError('-a and -w exclude each other');
  return { ...(nodes !== undefined ? { nodes } : {}), ...(exclude !== undefined ? { exclude } : {}), all: flag(args, 'all') };
}

export function fanoutLimit(args: ParsedArgs): number | undefined {
  const n = int(args, 'fanout');
  if (n !== undefined && (n < 1 || n > 10_000)) throw new UsageError('--fanout must be between 1 and 10000');
  return n;
}

/** The agents of the cluster (default), or SSH to the hosts of --hosts. */
export async function openFleet(args: ParsedArgs, io: CliIO): Promise<Fleet> {
  if (flag(args, 'ssh') || str(args, 'hosts') !== undefined) {
    const hosts = str(args, 'hosts');
    if (!flag(args, 'ssh') || hosts === undefined) throw new UsageError('--ssh needs --hosts FILE (and --hosts needs --ssh)');
    const { openSshFleet } = await import('../fanout/ssh-fleet.js');
    return openSshFleet(hosts, io.env);
  }
  const { configPath, loadClusterConfig } = await import('../config/cluster-config.js');
  const { CorralClient } = await import('../client/client.js');
  const { AgentFleet } = await import('../fanout/agent-fleet.js');
  const config = loadClusterConfig(configPath(str(args, 'config'), io.env));
  const via = str(args, 'via');
  return new AgentFleet(new CorralClient(config, { requestTimeoutMs: Math.max(10_000, config.timings.requestTimeoutMs), ...(via ? { node: via, only: true } : {}) }));
}

/** Ctrl-C (and SIGTERM) abort the returned signal once; the second Ctrl-C exits at once. */
export function interruptible(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  // Every transfer in flight listens to it.
  setMaxListeners(0, controller.signal);
  const onSignal = (): void => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new Error('interrupted'));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export const fanoutExitCodes: [number, string][] = [
  [0, 'every node succeeded'],
  [1, 'a command exited non-zero, or an operation failed on some node'],
  [2, 'usage: bad option, unknown node, empty node set'],
  [3, 'a command timed out or was killed by a signal'],
  [4, 'a node was unreachable'],
  [69, 'no agent could be reached'],
  [78, 'no or invalid configuration'],
  [130, 'interrupted (Ctrl-C): remote work was stopped; the summary shows what finished'],
];
