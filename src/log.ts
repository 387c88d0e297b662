// pino JSON to stdout (dockerd copies plugin stdout into its own log).
// Redaction is the second line of defence: code never logs raw Opts or a
// target; these paths catch a secret that slips into a logged object anyway.
import pino, { type Logger } from 'pino';

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

export function makeLogger(level: string, destination?: pino.DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'tsfs' },
      timestamp: pino.stdTimeFunctions.isoTime,
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
    },
    destination ?? pino.destination({ fd: 1, sync: true }),
  );
}
