// A private registry on a loopback port for install/upgrade tests: Debian's
// docker-registry (distribution 2.8) over TLS with a self-signed certificate,
// trusted by dockerd through /etc/docker/certs.d/<host:port>/ca.crt, which
// dockerd reads at each pull and push (no restart). Plain HTTP is not an
// option: `docker plugin upgrade` refuses it ("server gave HTTP response to
// HTTPS client") even where install works.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { request } from 'node:https';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../helpers/sshd';
import { ok } from './docker';

export interface Registry {
  /** host:port, the prefix of plugin references pushed here. */
  host: string;
  dir: string;
  /** GET a registry API path (e.g. /v2/<name>/manifests/<tag>) over TLS, parsed as JSON. */
  getJson(path: string, accept?: string): Promise<unknown>;
  stop(): Promise<void>;
}

export async function startRegistry(): Promise<Registry> {
  await ok(join(__dirname, '../../scripts/ensure-deps.sh'), ['registry']);
  const dir = mkdtempSync(join(tmpdir(), 'tsfs-registry-'));
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const cert = join(dir, 'cert.pem');
  const key = join(dir, 'key.pem');
  await ok('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
    '-subj', '/CN=tsfs-test-registry', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
  ]);
  writeFileSync(
    join(dir, 'config.yml'),
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${join(dir, 'data')}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: ${host}`,
      '  tls:',
      `    certificate: ${cert}`,
      `    key: ${key}`,
      '',
    ].join('\n'),
  );
  const certsD = `/etc/docker/certs.d/${host}`;
  mkdirSync(certsD, { recursive: true });
  copyFileSync(cert, join(certsD, 'ca.crt'));
  let err = '';
  const proc: ChildProcess = spawn('docker-registry', ['serve', join(dir, 'config.yml')], { stdio: ['ignore', 'ignore', 'pipe'] });
  proc.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-4000)));
  const ca = readFileSync(cert);
  for (let i = 0; ; i++) {
    if (proc.exitCode !== null) throw new Error(`docker-registry exited ${proc.exitCode}: ${err}`);
    const up = await new Promise<boolean>((res) => {
      const req = request({ host: '127.0.0.1', port, path: '/v2/', ca }, (r) => {
        r.resume();
        res(r.statusCode === 200);
      });
      req.on('error', () => res(false));
      req.end();
    });
    if (up) break;
    if (i > 200) throw new Error(`docker-registry never answered on ${host}: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  const getJson = (path: string, accept = 'application/json') =>
    new Promise<unknown>((res, rej) => {
      const req = request({ host: '127.0.0.1', port, path, ca, headers: { accept } }, (r) => {
        let body = '';
        r.setEncoding('utf8');
        r.on('data', (d: string) => (body += d));
        r.on('end', () => (r.statusCode === 200 ? res(JSON.parse(body)) : rej(new Error(`GET ${path}: HTTP ${r.statusCode}: ${body}`))));
      });
      req.on('error', rej);
      req.end();
    });
  return {
    host,
    dir,
    getJson,
    stop: async () => {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      rmSync(certsD, { recursive: true, force: true });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
