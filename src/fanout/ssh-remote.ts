// What the SSH fleet runs on the remote side: small POSIX sh scripts that need only sh, coreutils,
// find, xargs and setsid. Every value reaches them as a single-quoted word, never spliced into
// code, and the remote login shell runs `exec /bin/sh -c SCRIPT sh ARGS...` (so the login shell
// must parse POSIX single quotes: sh, bash, dash, ksh, zsh).

/** One word for a POSIX shell: single-quoted, a `'` becomes `'\''`. */
export function shq(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The remote command line that runs `script` under /bin/sh with `args` as "$@". */
export function remoteCommand(script: string, args: readonly string[] = []): string {
  return ['exec', '/bin/sh', '-c', shq(script), 'sh', ...args.map(shq)].join(' ');
}

export interface WrapperOptions {
  /** Random hex that marks the wrapper's own lines on stderr. */
  nonce: string;
  /** The command's argv (already /bin/sh -c LINE for --shell). */
  argv: readonly string[];
  env: Record<string, string>;
  cwd?: string;
  /** The command reads the session's stdin; otherwise it gets /dev/null and a watchdog reads it. */
  stdin: boolean;
  /** A script sent first on stdin (its byte count), written to a private directory and run. */
  script?: { name: string; size: number; rand: string };
  /** How long the watchdog waits between SIGTERM and SIGKILL when the session goes away. */
  killGraceMs: number;
}

function seconds(ms: number): string {
  return (Math.max(0, ms) / 1000).toFixed(3);
}

/**
 * The remote side of one exec. It starts the command under setsid, in a session (and process
 * group) of its own whose id is the command's pid, prints `corral-NONCE start PGID` on stderr,
 * waits, and prints `corral-NONCE exit STATUS` last. The local side strips both lines, learns the
 * group to kill from the first, and tells the command's status from a lost connection by the
 * second. Without --stdin a watchdog (a subshell, no extra program) holds the session's input:
 * when the SSH session ends early (the local client died), it reads end-of-file and kills the
 * command's group. Besides the command, a run costs the host two exec()s: sh and setsid.
 */
export function execWrapper(o: WrapperOptions): string {
  const lines = [
    `N=${o.nonce}`,
    `fin() { printf 'corral-%s exit %s\\n' "$N" "$1" >&2; exit "$1"; }`,
    `command -v setsid >/dev/null 2>&1 || { printf 'corral: setsid (util-linux) is missing on this host; corral --ssh needs it\\n' >&2; fin 127; }`,
    'S=',
  ];
  const fail = (rc: number): string => `{ [ -z "$S" ] || rm -rf -- "$S"; fin ${rc}; }`;
  if (o.script) {
    const file = `"$S"/${shq(o.script.name)}`;
    lines.push(
      `S="$PWD"/.corral/scripts/${o.script.rand}`,
      `(umask 077 && mkdir -p -- "$S") || fin 126`,
      o.script.size > 0 ? `dd bs=${o.script.size} count=1 iflag=fullblock of=${file} 2>/dev/null || ${fail(126)}` : `: > ${file} || ${fail(126)}`,
      `chmod 700 ${file} || ${fail(126)}`,
      `set -- ${file} "$@"`,
    );
  }
  if (o.cwd !== undefined) lines.push(`cd -- ${shq(o.cwd)} || ${fail(126)}`);
  for (const [k, v] of Object.entries(o.env)) lines.push(`${k}=${shq(v)}; export ${k}`);
  lines.push(
    `command -v "$1" >/dev/null 2>&1 || { printf 'corral: %s: command not found\\n' "$1" >&2; ${fail(127)}; }`,
    'exec 3<&0',
    // A background job of a shell without job control is not a group leader, so setsid(1) calls
    // setsid() in place: the job's pid is the new session's and group's id.
    `setsid "$@" ${o.stdin ? '<&3' : '</dev/null'} 3<&- &`,
    'pid=$!',
    `printf 'corral-%s start %s\\n' "$N" "$pid" >&2`,
    'w=',
  );
  if (!o.stdin) {
    lines.push(
      `{ while read -r _; do :; done; kill -TERM -"$pid" 2>/dev/null; sleep ${seconds(o.killGraceMs)}; kill -KILL -"$pid" 2>/dev/null; } <&3 >/dev/null 2>&1 &`,
      'w=$!',
    );
  }
  lines.push(
    'exec 3<&-',
    // (dash reports a job killed by a signal as "Terminated" on stderr; the command did not print it)
    'wait "$pid" 2>/dev/null; rc=$?',
    '[ -z "$w" ] || kill -TERM "$w" 2>/dev/null',
    '[ -z "$S" ] || rm -rf -- "$S"',
    'fin "$rc"',
  );
  return lines.join('\n');
}

/**
 * Ends a command's process group: SIGTERM, then SIGKILL once the leader is gone or `graceMs` has
 * passed, so nothing of the group survives the answer.
 */
export function killScript(pgid: number, graceMs: number): string {
  const polls = Math.max(0, Math.ceil(graceMs / 50));
  return [
    // (the group exists once setsid ran; a moment before, the pid alone is the command-to-be)
    `kill -TERM -${pgid} 2>/dev/null || kill -TERM ${pgid} 2>/dev/null || exit 0`,
    `i=0; while [ "$i" -lt ${polls} ] && kill -0 ${pgid} 2>/dev/null; do sleep 0.05; i=$((i+1)); done`,
    `kill -KILL -${pgid} 2>/dev/null; exit 0`,
  ].join('\n');
}

// The file operations. Each prints "$PWD" and a NUL first (relative paths resolve against it), and
// exits with a status that names the step that failed; the tool's message is on stderr.

export const STEP = {
  mkdirParent: 10,
  writeTemp: 11,
  tooMany: 13,
  shaMismatch: 14,
  place: 15,
  notFound: 20,
  notFile: 21,
  notReadable: 22,
  mkdir: 30,
  list: 40,
} as const;

/** mkdir: NUL-separated paths on stdin; prints 1 (created) or 0 (was there) and a NUL per path. */
export const MKDIR_SCRIPT = [
  'export LC_ALL=C',
  `printf '%s\\0' "$PWD"`,
  `xargs -0 -r /bin/sh -c 'for p; do if [ -d "$p" ]; then printf "0\\0"; elif mkdir -p -- "$p"; then printf "1\\0"; else exit 255; fi; done' sh`,
].join('\n');

/** check: NUL-separated paths on stdin; prints `HASH  PATH` and a NUL for each regular file. */
export const CHECK_SCRIPT = [
  'export LC_ALL=C',
  `printf '%s\\0' "$PWD"`,
  `xargs -0 -r /bin/sh -c 'for f; do [ -f "$f" ] && printf "%s\\0" "$f"; done; exit 0' sh | xargs -0 -r sha256sum -z -- 2>/dev/null`,
  'exit 0',
].join('\n');

/**
 * The file server: one SSH session that receives and sends many files, so that a push or a gather
 * of thousands of small files costs neither a session (and a login shell) nor a local ssh process
 * per file. It prints "$PWD" and a NUL, then serves requests one after the other. A path line is
 * `r` and the path, or `e` and the path with every byte outside printable ASCII and every
 * backslash as \0NNN (for names with newlines; printf %b decodes it).
 *
 * Put: `P SIZE SHA256 MODE FSYNC`, DIR, TARGET and TEMP lines, exactly SIZE bytes, then a verdict
 * line: C when the sender sent the file whole, A when it had more bytes than announced. The answer
 * is `R STEP SHA256|- MESSAGE`: STEP 0 when the file is in place, else the step that failed (see
 * STEP). The bytes go to TEMP (created exclusively, mode 600), are hashed there with sha256sum,
 * and only a match is given its mode and renamed onto TARGET. A sender that stops mid-file ends
 * the session: dd reads end-of-file, the verdict never comes, and the temporary file is removed.
 *
 * Get: `G` and a path line. The answer is `E STEP` (missing, not a file, unreadable) or `K`, the
 * file in base64 on one line (any change of size on the way cannot break the framing), then
 * `S STATUS MESSAGE`.
 */
export const FILE_SERVER_SCRIPT = [
  'export LC_ALL=C',
  'umask 077',
  'exec 3>&1',
  "nl='\n'",
  `path() { case $1 in r*) r=\${1#r} ;; *) r=$(printf '%bx' "\${1#e}"); r=\${r%x} ;; esac; }`,
  `printf '%s\\0' "$PWD"`,
  'while IFS= read -r hd; do',
  '  set -- $hd',
  '  case $1 in',
  '  G)',
  '    IFS= read -r l1 || exit 0',
  '    path "$l1"',
  `    if [ ! -e "$r" ]; then echo 'E ${STEP.notFound}'`,
  `    elif [ ! -f "$r" ]; then echo 'E ${STEP.notFile}'`,
  `    elif [ ! -r "$r" ]; then echo 'E ${STEP.notReadable}'`,
  '    else',
  '      echo K',
  '      msg=$(base64 -w 0 2>&1 >&3 < "$r"); rc=$?',
  `      printf '\\nS %s %s\\n' "$rc" "\${msg%%"$nl"*}"`,
  '    fi',
  '    continue ;;',
  '  P) ;;',
  '  *) exit 0 ;;',
  '  esac',
  '  IFS= read -r l1 && IFS= read -r l2 && IFS= read -r l3 || exit 0',
  '  size=$2 sha=$3 mode=$4 sync=$5',
  '  path "$l1"; d=$r; path "$l2"; t=$r; path "$l3"; tmp=$r',
  '  code=0 msg= h=-',
  `  if [ ! -d "$d" ] && ! msg=$(mkdir -p -- "$d" 2>&1); then`,
  `    code=${STEP.mkdirParent}`,
  '    dd bs=65536 count="$size" iflag=count_bytes,fullblock of=/dev/null status=none || exit 0',
  '  elif ! msg=$(dd bs=65536 count="$size" iflag=count_bytes,fullblock conv=excl of="$tmp" status=none 2>&1); then',
  `    rm -f -- "$tmp"; printf 'R ${STEP.writeTemp} - %s\\n' "\${msg%%"$nl"*}"; exit 0`,
  '  fi',
  '  IFS= read -r verdict || { rm -f -- "$tmp"; exit 0; }',
  `  [ "$code" != 0 ] || [ "$verdict" = C ] || code=${STEP.tooMany}`,
  `  if [ "$code" = 0 ]; then h=$(sha256sum < "$tmp") || code=${STEP.writeTemp}; h=\${h%% *}; fi`,
  `  [ "$code" != 0 ] || [ "$h" = "$sha" ] || code=${STEP.shaMismatch}`,
  `  [ "$code" != 0 ] || msg=$(chmod "$mode" "$tmp" 2>&1) || code=${STEP.writeTemp}`,
  `  [ "$code" != 0 ] || [ "$sync" != 1 ] || msg=$(sync -d -- "$tmp" 2>&1) || code=${STEP.writeTemp}`,
  `  if [ "$code" = 0 ] && [ -d "$t" ] && [ ! -L "$t" ]; then msg='Is a directory'; code=${STEP.place}; fi`,
  `  [ "$code" != 0 ] || msg=$(mv -fT -- "$tmp" "$t" 2>&1) || code=${STEP.place}`,
  '  [ "$code" = 0 ] || rm -f -- "$tmp"',
  `  printf 'R %s %s %s\\n' "$code" "$h" "\${msg%%"$nl"*}"`,
  'done',
].join('\n');

/** A path as one request line of the file server. */
export function putPathLine(p: string): string {
  if (!p.includes('\n')) return `r${p}\n`;
  let out = 'e';
  for (const byte of Buffer.from(p)) out += byte >= 0x20 && byte < 0x7f && byte !== 0x5c ? String.fromCharCode(byte) : `\\0${byte.toString(8).padStart(3, '0')}`;
  return `${out}\n`;
}

/**
 * list: "$1" the root (never starting with "-"); prints `TYPE MODE SIZE PATH` and a NUL for the
 * root and everything under it (files and directories only), then an empty record, then
 * `HASH  PATH` and a NUL per file.
 */
export const LIST_SCRIPT = [
  'export LC_ALL=C',
  `printf '%s\\0' "$PWD"`,
  `[ -e "$1" ] || [ -L "$1" ] || exit ${STEP.notFound}`,
  `find "$1" \\( -type f -o -type d \\) -printf '%y %m %s %p\\0' || exit ${STEP.list}`,
  `printf '\\0'`,
  `find "$1" -type f -exec sha256sum -z -- {} + || exit ${STEP.list}`,
].join('\n');

/** Scans a stream for whole `corral-NONCE WORD VALUE\n` lines; everything else passes through. */
export class MarkerScanner {
  private readonly prefix: Buffer;
  private pending: Buffer = Buffer.alloc(0);

  constructor(nonce: string) {
    this.prefix = Buffer.from(`corral-${nonce} `);
  }

  /** Returns the bytes to pass on and the markers found, in order. */
  push(chunk: Buffer): { data: Buffer; markers: { word: string; value: string }[] } {
    let buf = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    const out: Buffer[] = [];
    const markers: { word: string; value: string }[] = [];
    for (;;) {
      const at = buf.indexOf(this.prefix);
      if (at === -1) break;
      const nl = buf.indexOf(0x0a, at);
      if (nl === -1) {
        out.push(buf.subarray(0, at));
        this.pending = buf.subarray(at);
        return { data: Buffer.concat(out), markers };
      }
      out.push(buf.subarray(0, at));
      const [word = '', value = ''] = buf.subarray(at + this.prefix.length, nl).toString('latin1').split(' ');
      markers.push({ word, value });
      buf = buf.subarray(nl + 1);
    }
    // Hold back a tail that could be the start of a marker cut by the chunk boundary.
    let keep = 0;
    for (let k = Math.min(this.prefix.length - 1, buf.length); k > 0; k--) {
      if (buf.subarray(buf.length - k).equals(this.prefix.subarray(0, k))) {
        keep = k;
        break;
      }
    }
    out.push(buf.subarray(0, buf.length - keep));
    this.pending = Buffer.from(buf.subarray(buf.length - keep));
    return { data: Buffer.concat(out), markers };
  }

  /** What is left at the end of the stream. */
  end(): Buffer {
    const rest = this.pending;
    this.pending = Buffer.alloc(0);
    return rest;
  }
}

const SIGNALS = ['', 'SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGILL', 'SIGTRAP', 'SIGABRT', 'SIGBUS', 'SIGFPE', 'SIGKILL', 'SIGUSR1', 'SIGSEGV', 'SIGUSR2', 'SIGPIPE', 'SIGALRM', 'SIGTERM'];

/**
 * A shell's `$?` as the exit event reports it: 129 to 143 are a death by signal 1 to 15 (a shell
 * cannot tell them from an exit with that status; signals are the common case).
 */
export function statusOf(rc: number): { code: number | null; signal: string | null } {
  if (rc > 128 && rc - 128 < SIGNALS.length) return { code: null, signal: SIGNALS[rc - 128] as string };
  return { code: rc, signal: null };
}

const ERRNO_TEXT: [RegExp, string][] = [
  [/No such file or directory/, 'it does not exist'],
  [/Not a directory/, 'a component is not a directory'],
  [/Is a directory/, 'it is a directory'],
  [/Permission denied/, 'permission denied'],
  [/Operation not permitted/, 'operation not permitted'],
  [/No space left on device/, 'no space left on the device'],
  [/File exists/, 'something else already exists there'],
  [/Read-only file system/, 'the file system is read-only'],
];

/** The reason in a coreutils message (run under LC_ALL=C), worded as the agents word it. */
export function reasonOf(stderr: string): string {
  for (const [re, why] of ERRNO_TEXT) if (re.test(stderr)) return why;
  const last = lastLine(stderr);
  return last === '' ? 'it failed' : last;
}

export function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines[lines.length - 1] ?? '';
}
