// The logging interface every layer takes: the subset of pino that corral uses. The agent passes
// a real pino logger (src/agent/logger.ts); libraries and tests may pass nullLogger.

export interface LogFn {
  (obj: object, msg?: string): void;
  (msg: string): void;
}

export interface Logger {
  error: LogFn;
  warn: LogFn;
  info: LogFn;
  debug: LogFn;
  child(bindings: Record<string, unknown>): Logger;
}

const noop: LogFn = () => undefined;

export const nullLogger: Logger = {
  error: noop,
  warn: noop,
  info: noop,
  debug: noop,
  child: () => nullLogger,
};

/** A logger that records entries in memory, for tests that assert on warnings. */
export function memoryLogger(): Logger & { entries: { level: string; msg: string; obj: object }[] } {
  const entries: { level: string; msg: string; obj: object }[] = [];
  const make = (level: string): LogFn =>
    ((a: object | string, b?: string) => {
      if (typeof a === 'string') entries.push({ level, msg: a, obj: {} });
      else entries.push({ level, msg: b ?? '', obj: a });
    });
  const logger = {
    entries,
    error: make('error'),
    warn: make('warn'),
    info: make('info'),
    debug: make('debug'),
    child: () => logger,
  };
  return logger;
}
