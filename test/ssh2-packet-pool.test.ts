// The ssh2 patch's packet pool (patches/ssh2+1.17.0.patch, lib/protocol/crypto.js):
// big outbound packets reuse buffers that the socket has finished writing. A
// slot handed out again too early would send one packet's bytes in place of
// another's, so the end-to-end case writes more than the loopback socket
// takes at once (the socket then holds packets across turns of the event
// loop) from several files in parallel, and compares the server's files
// byte for byte.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SFTPWrapper } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSsh } from '../src/sftp/connect';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const pool = require('ssh2/lib/protocol/crypto.js') as {
  allocPacketBuffer(len: number): Buffer;
  releasePacketBuffer(buf: Buffer): void;
  isPooledPacket(buf: Buffer): boolean;
};

describe('packet pool', () => {
  it('hands a slot out again only after it is released, and leaves small and oversized packets alone', () => {
    const a = pool.allocPacketBuffer(32 * 1024 + 60);
    const b = pool.allocPacketBuffer(20_000);
    expect(pool.isPooledPacket(a) && pool.isPooledPacket(b)).toBe(true);
    expect(a.buffer).not.toBe(b.buffer);
    expect(a.length).toBe(32 * 1024 + 60);
    expect(pool.isPooledPacket(pool.allocPacketBuffer(1_000))).toBe(false);
    expect(pool.isPooledPacket(pool.allocPacketBuffer(40_000))).toBe(false);
    pool.releasePacketBuffer(a);
    const c = pool.allocPacketBuffer(17_000);
    expect(c.buffer).toBe(a.buffer);
    const d = pool.allocPacketBuffer(17_000);
    expect([a.buffer, b.buffer]).not.toContain(d.buffer);
    // A buffer that is not a slot is never taken in.
    pool.releasePacketBuffer(Buffer.alloc(20_000));
    expect(pool.isPooledPacket(pool.allocPacketBuffer(20_000))).toBe(true);
  });
});

let sshd: Sshd;
beforeAll(async () => { sshd = await startSshd(); });
afterAll(async () => { await sshd?.stop(); if (sshd) removeSshdDir(sshd); });

const call = <T>(f: (cb: (err: Error | null | undefined, v: T) => void) => void) =>
  new Promise<T>((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v))));

async function writeWhole(sftp: SFTPWrapper, path: string, data: Buffer, request: number): Promise<void> {
  const h = await call<Buffer>((cb) => sftp.open(path, 'w', cb));
  const writes: Promise<unknown>[] = [];
  // Every request is queued at once: ssh2 has no backpressure, so the socket holds megabytes.
  for (let off = 0; off < data.length; off += request) {
    writes.push(call((cb) => sftp.write(h, data, off, Math.min(request, data.length - off), off, cb as never)));
  }
  await Promise.all(writes);
  await call((cb) => sftp.close(h, cb as never));
}

describe('packet pool, end to end against OpenSSH', () => {
  it('4 files x 8 MiB written in parallel on one connection arrive byte for byte', async () => {
    const link = await connectSsh({
      host: sshd.host, port: sshd.port, username: sshd.user, remotePath: sshd.storeDir,
      privateKey: readFileSync(sshd.userKeyPath), identityFile: sshd.userKeyPath,
      strictHostKeyChecking: 'accept-new', keepaliveInterval: 0, keepaliveCountMax: 3, connectTimeout: 5000,
    });
    try {
      const sftps = await Promise.all([link.openSftp(), link.openSftp()]);
      const files = Array.from({ length: 4 }, (_, i) => ({ name: `pool-${i}.bin`, data: randomBytes(8 << 20) }));
      await Promise.all(files.map((f, i) => writeWhole(sftps[i % 2]!, join(sshd.storeDir, f.name), f.data, i % 2 ? 64 * 1024 : 255 * 1024)));
      for (const f of files) {
        const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
        expect(sha(readFileSync(join(sshd.storeDir, f.name))), f.name).toBe(sha(f.data));
      }
    } finally {
      link.close();
    }
  });
});
