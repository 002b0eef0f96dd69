// Running the real `corral` executable on a pseudo-terminal, for tests of what people see on a
// TTY (progress bars, colour): util-linux's `script -qfec CMD /dev/null` (bsdutils on Debian)
// gives the command a terminal as standard input, output and error, and copies what it writes.

import { spawn, spawnSync } from 'node:child_process';
import { CORRAL, type RunResult } from './cli.js';

/** Why TTY tests cannot run here, or undefined when they can. */
export function scriptMissing(): string | undefined {
  return spawnSync('script', ['--version'], { stdio: 'ignore' }).error ? '`script` (util-linux, Debian package bsdutils) is missing' : undefined;
}

/** Single-quoted for /bin/sh: script(1) hands its command to a shell. */
function quote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/**
 * `corral ARGS` on a terminal. stdout holds everything the terminal showed (stdout and stderr
 * together, with \r\n line ends); NO_COLOR is left out of the environment unless given in `env`.
 * With `stdoutTo`, the command's standard output is that file instead, its stderr still the terminal.
 */
export function runCorralInTty(args: string[], options: { env?: NodeJS.ProcessEnv; timeoutMs?: number; stdoutTo?: string } = {}): Promise<RunResult> {
  const env: NodeJS.ProcessEnv = { ...process.env, TERM: 'xterm', ...options.env };
  if (options.env?.NO_COLOR === undefined) delete env.NO_COLOR;
  // stdoutTo: the command's standard output goes to that file instead (stderr stays the terminal).
  const command = [process.execPath, CORRAL, ...args].map(quote).join(' ') + (options.stdoutTo ? ` > ${quote(options.stdoutTo)}` : '');
  return new Promise((resolve, reject) => {
    // A group of its own, so a timeout can end script; the command, in the terminal's session,
    // gets SIGHUP when the terminal goes away.
    const child = spawn('script', ['-qfec', command, '/dev/null'], { env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      try {
        process.kill(-(child.pid as number), 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
      reject(new Error(`corral ${args.join(' ')} on a TTY did not finish within ${options.timeoutMs ?? 60_000} ms\noutput: ${stdout}`));
    }, options.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    child.stdin.end();
  });
}
