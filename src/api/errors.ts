// The error catalogue: every failure that crosses a boundary (wire, CLI) carries one of these
// stable codes. Callers branch on `code`, never on the message. The wire form is {code, message}.

export const ErrorCodes = {
  // Client-side and CLI
  USAGE: { status: 400, exit: 2, summary: 'bad command line: unknown verb or flag, or a missing argument' },
  CONFIG_INVALID: { status: 400, exit: 78, summary: 'a configuration file is malformed or names something impossible' },
  CONFIG_NOT_FOUND: { status: 404, exit: 78, summary: 'no cluster configuration: pass --config FILE or set CORRAL_CONFIG' },
  UNKNOWN_NODE: { status: 404, exit: 78, summary: 'a node name that the cluster configuration does not list' },
  // Wire and transport
  BAD_REQUEST: { status: 400, exit: 65, summary: 'a request body or parameter is malformed' },
  NOT_FOUND: { status: 404, exit: 65, summary: 'no such endpoint or object' },
  FORBIDDEN: { status: 403, exit: 77, summary: 'the authenticated peer may not call this endpoint' },
  TOO_LARGE: { status: 413, exit: 65, summary: 'a request body exceeds the size limit' },
  UNAVAILABLE: { status: 503, exit: 69, summary: 'the agent or peer could not be reached' },
  TIMEOUT: { status: 504, exit: 75, summary: 'an operation did not finish within its deadline' },
  TLS: { status: 400, exit: 77, summary: 'TLS credentials are missing, invalid or rejected' },
  INTERNAL: { status: 500, exit: 70, summary: 'a bug: an unexpected failure inside corral' },
  // Store
  STORE_UNAVAILABLE: { status: 503, exit: 69, summary: 'the coordination store cannot be reached or is not serving' },
  LEASE_NOT_FOUND: { status: 404, exit: 65, summary: 'the lease does not exist or has expired' },
  COMPACTED: { status: 410, exit: 65, summary: 'a watch asked for history older than the store keeps' },
  JOURNAL_CORRUPT: { status: 500, exit: 74, summary: 'the store journal or snapshot is corrupt before its end' },
  DATA_DIR_LOCKED: { status: 409, exit: 75, summary: 'another process already owns this data directory' },
  // Cluster
  ALREADY_RUNNING: { status: 409, exit: 1, summary: 'the thing to start is already running' },
  NOT_RUNNING: { status: 409, exit: 1, summary: 'the thing to stop or query is not running' },
  JOIN_REFUSED: { status: 403, exit: 77, summary: 'the join token was refused' },
  SESSION_LOST: { status: 503, exit: 69, summary: 'the session lease was lost or may have expired' },
  SHUTTING_DOWN: { status: 503, exit: 69, summary: 'the agent is shutting down' },
  CONFLICT: { status: 409, exit: 75, summary: 'a concurrent change won the race; run the command again' },
  // Fan-out
  PATH_REFUSED: { status: 403, exit: 77, summary: 'a path lies outside the directories the agent may write (its work directory unless writeRoots says more)' },
  CHECKSUM_MISMATCH: { status: 422, exit: 1, summary: 'a transferred file did not arrive with the SHA-256 it was sent with; nothing was put in place' },
  FILE_ERROR: { status: 422, exit: 1, summary: 'a file or directory operation failed on the node (missing, not a directory, no permission, disk full)' },
  // Locks (exit codes as FLoM's: 96 resource does not exist, 98 busy or timed out, 99 anything else)
  LOCK_BUSY: { status: 409, exit: 98, summary: 'the resource is locked and the request may not wait (timeout 0)' },
  LOCK_TIMEOUT: { status: 409, exit: 98, summary: 'the lock was not granted before the request timed out' },
  LOCK_LOST: { status: 409, exit: 98, summary: 'a held lock was lost (its session ended, or its agent is unreachable): the protected work was stopped' },
  RESOURCE_NOT_FOUND: { status: 404, exit: 96, summary: 'the lock resource does not exist and the request may not create it' },
  LOCK_IMPOSSIBLE: { status: 422, exit: 99, summary: 'the lock can never be granted: the request asks for more than the resource has' },
  BAD_RESOURCE: { status: 400, exit: 99, summary: 'not a valid lock resource name (simple, name[N], a.b.c, /a/b, _s_name[N], _S_name[N], _t_FORMAT[N])' },
  BAD_LOCK_MODE: { status: 400, exit: 99, summary: 'not a lock mode: NL, CR, CW, PR, PW, EX or their long names (NullLock ... Exclusive)' },
  BAD_LOCK_REQUEST: { status: 400, exit: 99, summary: 'a lock request option is invalid: quantity, timeout or idle lifespan' },
} as const satisfies Record<string, { status: number; exit: number; summary: string }>;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === 'string' && Object.hasOwn(ErrorCodes, code);
}

/** The one error class of corral: a stable code, a one-line message that says how to fix it. */
export class CorralError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CorralError';
    this.code = code;
  }

  get status(): number {
    return ErrorCodes[this.code].status;
  }

  get exitCode(): number {
    return ErrorCodes[this.code].exit;
  }

  toWire(): WireError {
    return { code: this.code, message: this.message };
  }

  static fromWire(body: unknown, fallbackStatus?: number): CorralError {
    if (body !== null && typeof body === 'object') {
      const { code, message } = body as { code?: unknown; message?: unknown };
      if (isErrorCode(code) && typeof message === 'string') return new CorralError(code, message);
    }
    return new CorralError('INTERNAL', `peer answered with an unrecognised error (HTTP ${fallbackStatus ?? '?'})`);
  }

  /** Wraps anything thrown into a CorralError; unknown errors become INTERNAL. */
  static from(err: unknown): CorralError {
    if (err instanceof CorralError) return err;
    const message = err instanceof Error ? err.message : String(err);
    return new CorralError('INTERNAL', message, { cause: err });
  }
}

export interface WireError {
  code: ErrorCode;
  message: string;
}

export function isCorralError(err: unknown, code?: ErrorCode): err is CorralError {
  return err instanceof CorralError && (code === undefined || err.code === code);
}
