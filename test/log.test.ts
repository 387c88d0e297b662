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
