import { commonOptions, flag, type ParsedArgs, type VerbSpec } from '../args.js';
import { fanoutExitCodes, fanoutLimit, interruptible, openFleet, targetOptions, targetSpec } from '../fanout-common.js';
import type { CliIO, Verb } from '../verb.js';

const spec: VerbSpec = {
  name: 'mkdir',
  summary: 'create directories (with parents) on many nodes',
  usage: 'mkdir [-w SET] [-x SET] [--json] PATH...',
  options: [...targetOptions, commonOptions.json, commonOptions.help],
  positionals: { min: 1, max: 1000, names: 'PATH' },
  details: `Creates each PATH and its parents on every target node, as mkdir -p does, and reports per
node. A relative PATH is relative to each agent's work directory. Paths never pass through a
shell; an agent refuses paths outside its writeRoots (default: its work directory).`,
  exitCodes: fanoutExitCodes.filter(([c]) => c !== 3),
};

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const { FANOUT_PATHS } = await import('../../api/fanout-wire.js');
  const { UNREACHABLE_CODES } = await import('../../fanout/transfer.js');
  const fleet = await openFleet(args, io);
  const interrupt = interruptible();
  try {
    const { nodes } = await fleet.targets(targetSpec(args));
    const fanout = fanoutLimit(args);
    const rows: { node: string; ok: boolean; created: string[]; existed: string[]; error?: string; code?: string }[] = [];
    for await (const ev of fleet.call(nodes, { path: FANOUT_PATHS.nodeMkdir, body: { paths: args.positionals } }, { signal: interrupt.signal, ...(fanout ? { fanout } : {}) })) {
      if (ev.t === 'plan') continue;
      if (ev.t === 'ok') {
        const dirs = (ev.result as { dirs: { path: string; created: boolean }[] }).dirs;
        rows.push({ node: ev.node, ok: true, created: dirs.filter((d) => d.created).map((d) => d.path), existed: dirs.filter((d) => !d.created).map((d) => d.path) });
      } else rows.push({ node: ev.node, ok: false, created: [], existed: [], error: ev.error, code: ev.code });
    }
    const order = new Map(nodes.map((n, i) => [n, i]));
    rows.sort((a, b) => (order.get(a.node) ?? 0) - (order.get(b.node) ?? 0));
    const unreachable = rows.filter((r) => !r.ok && UNREACHABLE_CODES.has(r.code ?? ''));
    const failed = rows.filter((r) => !r.ok && !unreachable.includes(r));
    if (flag(args, 'json')) io.stdout(JSON.stringify({ nodes: rows }, null, 2) + '\n');
    else {
      const width = Math.max(0, ...rows.map((r) => r.node.length));
      for (const r of rows) {
        const head = `${r.node}:`.padEnd(width + 1);
        if (!r.ok) io.stdout(`${head} FAILED: ${r.error ?? ''}\n`);
        else io.stdout(`${head} ${r.created.length ? `created ${r.created.join(', ')}` : ''}${r.created.length && r.existed.length ? '; ' : ''}${r.existed.length ? `exists ${r.existed.join(', ')}` : ''}\n`);
      }
    }
    if (interrupt.signal.aborted) return 130;
    return unreachable.length > 0 ? 4 : failed.length > 0 ? 1 : 0;
  } finally {
    interrupt.dispose();
    await fleet.close();
  }
}

export const verb: Verb = { spec, run };
