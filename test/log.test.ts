import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { makeLogger } from '../src/log';

describe('log redaction (second line of defence behind never logging Opts)', () => {
  it('censors secrets nested in logged objects', () => {
    let out = '';
    const sink = new Writable({ write: (c, _e, cb) => ((out += c.toString()), cb()) });
    const log = makeLogger('info', sink);
    log.info({ password: 'p1-Zq7', target: { passphrase: 'p2-Zq7', privateKey: 'p3-Zq7' }, req: { Opts: { password: 'p4-Zq7' } }, a: { b: { password: 'p5-Zq7' } } }, 'x');
    expect(out).not.toMatch(/p\d-Zq7/);
    expect(out).toContain('[redacted]');
  });
});

describe('LOG_FORMAT=pretty', () => {
  it('writes LEVEL msg key=value on one line, quoting values with spaces, after redaction', () => {
    let out = '';
    const sink = new Writable({ write: (c, _e, cb) => ((out += c.toString()), cb()) });
    const log = makeLogger('info', sink, 'pretty');
    log.info({ endpoint: '/VolumeDriver.Create', volume: 'v1', ms: 12.5, err: 'a b', password: 'p6-Zq7' }, 'request');
    expect(out).toBe("INFO request endpoint=/VolumeDriver.Create volume=v1 ms=12.5 err='a b' password=[redacted]\n");
  });
});

describe('LOG_FORMAT=pretty values', () => {
  it('lists comma-joined, a value with a single quote in double quotes', () => {
    let out = '';
    const sink = new Writable({ write: (c, _e, cb) => ((out += c.toString()), cb()) });
    makeLogger('debug', sink, 'pretty').debug({ extensions: ['a@x', 'b@y'], said: "it's" }, 'x');
    expect(out).toBe('DEBUG x extensions=a@x,b@y said="it\'s"\n');
  });
});

describe('logging to stdout', () => {
  it('never blocks the process on a reader that stopped: it buffers, drops the excess and says how much once drained', async () => {
    // The child logs more than the 16 MiB buffer before anyone reads its
    // stdout; only after it reports, on stderr, that it got through does
    // this start reading. A synchronous logger would wait for the reader
    // forever (the test's timeout).
    const child = spawn(process.execPath, ['--import', 'tsx', join(__dirname, 'fixtures', 'log-flood.ts')], { stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pause();
    await new Promise<void>((resolve) => child.stderr.on('data', (b: Buffer) => b.toString().includes('through') && resolve()));
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stdout.resume();
    expect(await new Promise((r) => child.on('close', r))).toBe(0);
    const lines = out.trim().split('\n').map((l) => JSON.parse(l) as { msg: string; i?: number; droppedLines?: number });
    const kept = lines.filter((l) => l.msg === 'line');
    const warning = lines.find((l) => l.msg.startsWith('log lines were dropped'));
    expect(kept[0].i).toBe(0);
    expect(warning?.droppedLines).toBe(40_000 - kept.length);
    expect(kept.length).toBeGreaterThan(20_000);
    expect(lines.at(-1)).toBe(warning);
  });
});
