// Structured logs: one JSON object per line {"ts","level","msg","subsys",...}; text on a TTY.
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export type Level = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(fields: Record<string, unknown>): Logger;
}

export interface LogSink {
  write(line: string): void;
}

let stderrGuarded = false;

/**
 * stderr, with its write errors dropped: when the reader is gone (EPIPE: a closed pipe, a restarted
 * journal) there is nowhere to report them, and an unhandled stream error would reach the
 * uncaughtException handler, which logs to stderr again — a loop that never lets the agent exit.
 */
export const stderrSink: LogSink = {
  write: (l) => {
    if (!stderrGuarded) {
      stderrGuarded = true;
      process.stderr.on('error', () => {});
    }
    process.stderr.write(l);
  },
};

/** Appends to a file, creating its directory; logging must never fail the operation it describes. */
export function fileSink(path: string): LogSink {
  let ready = false;
  return {
    write(line) {
      try {
        if (!ready) {
          mkdirSync(dirname(path), { recursive: true });
          ready = true;
        }
        appendFileSync(path, line);
      } catch {
        /* best effort */
      }
    },
  };
}

export function createLogger(opts: { subsys: string; level?: Level; sink?: LogSink; text?: boolean; base?: Record<string, unknown> }): Logger {
  const min = ORDER[opts.level ?? ((process.env.PODNET_LOG_LEVEL as Level) || 'info')] ?? 20;
  const sink = opts.sink ?? stderrSink;
  const text = opts.text ?? (sink === stderrSink && process.stderr.isTTY === true);
  const base = { subsys: opts.subsys, ...(opts.base ?? {}) };
  const emit = (level: Level, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[level] < min) return;
    const rec = { ts: new Date().toISOString(), level, msg, ...base, ...(fields ?? {}) };
    if (text) {
      const extra = Object.entries({ ...base, ...(fields ?? {}) })
        .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
        .join(' ');
      sink.write(`${rec.ts} ${level.toUpperCase().padEnd(5)} ${msg} ${extra}\n`);
    } else {
      sink.write(JSON.stringify(rec) + '\n');
    }
  };
  const logger: Logger = {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger({ ...opts, sink, text, base: { ...(opts.base ?? {}), ...fields } }),
  };
  return logger;
}

export const nullLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child() {
    return nullLogger;
  },
};
