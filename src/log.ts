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

export function makeLogger(level: string, destination?: Sink, format: LogFormat = 'json'): Logger {
  const raw = destination ?? pino.destination({ fd: 1, sync: true });
  return pino(
    {
      level,
      base: { name: 'tsfs' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    (format === 'pretty' ? prettySink(raw) : raw) as pino.DestinationStream,
  );
}
