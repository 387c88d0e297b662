// pino to stdout (dockerd copies plugin stdout into its own log, one
// `msg="..."` per line). Redaction is the second line of defence: code never
// logs raw Opts or a target; these paths catch a secret that slips into a
// logged object anyway.
import pino, { type Logger } from 'pino';
import type { LogFormat } from './config';

export const REDACT_PATHS = [
  'password',
  'passphrase',
  'privateKey',
  '*.password',
  '*.passphrase',
  '*.privateKey',
  '*.*.password',
  '*.*.passphrase',
  '*.*.privateKey',
  'Opts',
  '*.Opts',
];

interface Sink {
  write(s: string): unknown;
}

// pino's own fields that the pretty line shows in its own way (or not: dockerd stamps the time).
const OWN = new Set(['level', 'time', 'msg', 'name']);

/**
 * A value as the pretty line shows it: bare when it has no space, quote or
 * `=`; a list of plain values comma-joined; else in single quotes, which
 * dockerd's msg="..." leaves alone (double quotes come out as \").
 */
function show(v: unknown): string {
  const s = Array.isArray(v) && v.every((x) => typeof x !== 'object') ? v.join(',') : typeof v === 'string' ? v : JSON.stringify(v);
  if (/^[^\s"'=]+$/.test(s)) return s;
  return s.includes("'") ? JSON.stringify(s) : `'${s}'`;
}

/** One pino JSON line -> `LEVEL msg key=value ...`. */
export function prettyLine(json: string): string {
  let o: Record<string, unknown>;
  try {
    o = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json;
  }
  let out = `${String(o.level).toUpperCase()} ${String(o.msg ?? '')}`;
  for (const k in o) if (!OWN.has(k)) out += ` ${k}=${show(o[k])}`;
  return out + '\n';
}

/** Sink that rewrites each of pino's lines (already redacted) as a pretty one. */
export function prettySink(out: Sink): Sink {
  return { write: (s: string) => out.write(prettyLine(s)) };
}

/**
 * stdout, written from a buffer in the background. Synchronous writes
 * blocked the thread that serves every mount whenever the reader of the
 * pipe (dockerd, or a test) fell behind: 4.5 s of a 256-volume storm's
 * event loop went to write(2) and sonic-boom's EAGAIN sleeps. pino flushes
 * what is buffered when the process exits. A reader that stops altogether
 * costs at most MAX_BUFFERED bytes; what does not fit is dropped and
 * counted in a warning once the buffer has drained.
 */
const MAX_BUFFERED = 16 * 1024 * 1024;

function stdoutSink(): { sink: pino.DestinationStream; onDrop: (report: (lines: number) => void) => void } {
  const dest = pino.destination({ fd: 1, sync: false, maxLength: MAX_BUFFERED });
  let dropped = 0;
  let report: ((lines: number) => void) | undefined;
  dest.on('drop', () => void dropped++);
  // 'drain': everything buffered has been written, so the reader is back.
  dest.on('drain', () => {
    if (dropped === 0 || !report) return;
    const n = dropped;
    dropped = 0;
    report(n);
  });
  return { sink: dest, onDrop: (r) => (report = r) };
}

export function makeLogger(level: string, destination?: Sink, format: LogFormat = 'json'): Logger {
  const out = destination ? undefined : stdoutSink();
  const raw = destination ?? out!.sink;
  const log = pino(
    {
      level,
      base: { name: 'tsfs' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    (format === 'pretty' ? prettySink(raw) : raw) as pino.DestinationStream,
  );
  out?.onDrop((lines) => log.warn({ droppedLines: lines }, 'log lines were dropped: nothing read this process\'s output for a while'));
  return log;
}
