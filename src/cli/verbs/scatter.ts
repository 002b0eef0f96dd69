import { commonOptions, flag, str, type ParsedArgs, type VerbSpec } from '../args.js';
import { UsageError } from '../args.js';
import { fanoutExitCodes, fanoutLimit, interruptible, openFleet, targetOptions, targetSpec } from '../fanout-common.js';
import type { CliIO, Verb } from '../verb.js';

const RULES = ['suffix', 'hash', 'round-robin', 'random'] as const;

const spec: VerbSpec = {
  name: 'scatter',
  summary: 'distribute the files of a directory across nodes, each file to one node, checksummed',
  usage: 'scatter [-w SET] [-x SET] SRCDIR DEST --by suffix|hash|round-robin|random [--include GLOB]... [--move] [--manifest FILE] [--json]',
  options: [
    ...targetOptions,
    { name: 'by', type: 'string', value: 'RULE', description: 'suffix (distsys: _N before the extension), hash (of the name), round-robin, random' },
    { name: 'include', type: 'string', multiple: true, value: 'GLOB', description: 'only files matching GLOB (a name, or a path if it has "/"; * ? [] **)' },
    { name: 'move', type: 'boolean', description: 'delete each source file once its copy is verified on its node' },
    { name: 'manifest', type: 'string', value: 'FILE', description: 'the local manifest (default SRCDIR/.corral-manifest.tsv)' },
    commonOptions.json,
    commonOptions.help,
  ],
  positionals: { min: 2, max: 2, names: 'SRCDIR DEST' },
  details: `Every file under SRCDIR goes to exactly one node, to DEST/<its path under SRCDIR>. With
--by suffix (distsys's rule), a file named like data_7.txt goes to node (7 - 1) mod N of the N
target nodes in order; files without such a number are reported and left alone. --by hash is
stable for a file name whatever the run. Every copy is verified by SHA-256 on its node; --move
deletes a source only after that. A manifest (file, node, size, sha256) is written to DEST on
every node and locally; a re-run sends only what is missing.`,
  exitCodes: fanoutExitCodes.filter(([c]) => c !== 3),
};

/** A glob as a RegExp: * and ? stay inside a path segment, ** crosses them, [...] is a class. */
export function globRegExp(glob: string): RegExp {
  let re = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i] as string;
    if (c === '*') {
      if (glob[i + 1] === '*') {
        re += '.*';
        i++;
        if (glob[i + 1] === '/') i++;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = glob.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${glob.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

async function run(args: ParsedArgs, io: CliIO): Promise<number> {
  const path = await import('node:path');
  const { readFileSync, writeFileSync, renameSync } = await import('node:fs');
  const { unlink } = await import('node:fs/promises');
  const { planSources, assign, transfer, transferExit, renderReports, manifestText, putText, MANIFEST_NAME } = await import('../../fanout/transfer.js');
  const { bytesText } = await import('../../fanout/progress.js');
  const by = str(args, 'by');
  if (by === undefined) throw new UsageError(`--by is required: ${RULES.join(', ')}`);
  if (!(RULES as readonly string[]).includes(by)) throw new UsageError(`--by ${by}: expected ${RULES.join(', ')}`);
  const [srcDir, dest] = args.positionals as [string, string];
  const manifestPath = path.resolve(str(args, 'manifest') ?? path.join(srcDir, MANIFEST_NAME));
  const globs = ((args.options.include as string[] | undefined) ?? []).map((g) => ({ re: globRegExp(g), byPath: g.includes('/') }));
  const include = globs.length === 0 ? undefined : (rel: string): boolean => globs.some((g) => g.re.test(g.byPath ? rel : path.basename(rel)));
  const plan = await planSources([srcDir.endsWith('/') ? srcDir : `${srcDir}/`], {
    ...(include ? { include } : {}),
    exclude: (rel) => path.basename(rel) === MANIFEST_NAME || path.resolve(srcDir, rel) === manifestPath,
  });
  for (const s of plan.skipped) io.stderr(`corral scatter: skipped ${s}: not a regular file\n`);
  const fleet = await openFleet(args, io);
  const interrupt = interruptible();
  try {
    const { nodes } = await fleet.targets(targetSpec(args));
    const { byFile, unassigned } = assign(plan.files, nodes, by as (typeof RULES)[number]);
    for (const f of unassigned) io.stderr(`corral scatter: ${f.path}: no _N number before its extension; not sent\n`);
    // The manifest so far: a re-run keeps rows of files already moved away.
    const rows = new Map<string, { file: string; node: string; size: number; sha256: string }>();
    try {
      for (const line of readFileSync(manifestPath, 'utf8').split('\n').slice(1)) {
        const [file, node, size, sha256] = line.split('\t');
        if (file && node && size && sha256) rows.set(file, { file, node, size: Number(size), sha256 });
      }
    } catch {
      // no manifest yet
    }
    const verified: { file: (typeof plan.files)[number]; node: string }[] = [];
    const fanout = fanoutLimit(args);
    const reports = await transfer(fleet, nodes, plan, (f) => {
      const n = byFile.get(f);
      return n === undefined ? [] : [n];
    }, {
      dest,
      signal: interrupt.signal,
      label: 'scatter',
      ...(fanout ? { fanout } : {}),
      onVerified: (file, node) => verified.push({ file, node }),
      ...(process.stdout.isTTY && process.stderr.isTTY && !flag(args, 'json') ? { progress: { isTTY: true, write: (t: string) => io.stderr(t) } } : {}),
    });
    for (const { file, node } of verified) rows.set(file.path, { file: file.path, node, size: file.size, sha256: file.sha256 });
    const all = [...rows.values()].sort((a, b) => a.file.localeCompare(b.file));
    const temp = `${manifestPath}.corral-tmp`;
    writeFileSync(temp, manifestText(all));
    renameSync(temp, manifestPath);
    const manifestFailures: string[] = [];
    for (const node of nodes) {
      const mine = all.filter((r) => r.node === node);
      const report = reports.find((r) => r.node === node);
      if (mine.length === 0 || report?.unreachable !== undefined) continue;
      const r = await putText(fleet, node, dest, MANIFEST_NAME, manifestText(mine), interrupt.signal);
      if (!r.ok) manifestFailures.push(`${node}: ${r.error ?? ''}`);
    }
    let moved = 0;
    if (flag(args, 'move')) {
      for (const { file } of verified) {
        await unlink(file.abs).then(
          () => moved++,
          () => undefined,
        );
      }
    }
    const code = transferExit(reports, interrupt.signal.aborted);
    const finalCode = code === 0 && manifestFailures.length > 0 ? 1 : code;
    if (flag(args, 'json')) {
      io.stdout(JSON.stringify({ dest, by, files: plan.files.length, unassigned: unassigned.map((f) => f.path), moved, manifest: manifestPath, nodes: reports, manifestFailures, exitCode: finalCode }, null, 2) + '\n');
    } else {
      io.stdout(renderReports(reports, bytesText));
      for (const f of manifestFailures) io.stdout(`manifest not written on ${f}\n`);
      io.stdout(`${verified.length} of ${plan.files.length} files verified in place${unassigned.length ? `, ${unassigned.length} without a _N suffix` : ''}${flag(args, 'move') ? `, ${moved} sources deleted` : ''}; manifest ${manifestPath}\n`);
    }
    return finalCode;
  } finally {
    interrupt.dispose();
    await fleet.close();
  }
}

export const verb: Verb = { spec, run };
