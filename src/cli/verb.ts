// What every verb module exports. Verb modules keep their top-level imports light (the spec and
// the parser); anything heavy (transport, store, logging) is imported inside run().

import type { ParsedArgs, VerbSpec } from './args.js';

export interface CliIO {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /** Whether stdout is a terminal (tables, colour). */
  isTTY: boolean;
  /** Colour is allowed: stdout is a TTY and NO_COLOR is unset. */
  color: boolean;
}

export interface Verb {
  spec: VerbSpec;
  /** Returns the process exit code. Throws CorralError for failures with a stable code. */
  run(args: ParsedArgs, io: CliIO): Promise<number>;
}
