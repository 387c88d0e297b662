// The ssh2 patch's reply assembly (patches/ssh2+1.17.0.patch, lib/protocol/SFTP.js
// assembleReply): a DATA answer that spans channel chunks goes straight into
// its READ's buffer instead of a joined copy. A wrong offset or a missed
// packet boundary would hand a reader bytes of another answer, so the unit
// case splits a stream of answers (DATA for waiting READs, DATA too big for
// its READ, DATA nobody waits for, STATUS and HANDLE) at random points and
// checks every answer, and the end-to-end case reads a file from OpenSSH
// with READs in parallel and compares it byte for byte.
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import type { SFTPWrapper } from 'ssh2';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectSsh } from '../src/sftp/connect';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

// eslint-disable-next-line @typescript-eslint/no-require-imports
const { SFTP } = require('ssh2/lib/protocol/SFTP.js') as {
  SFTP: new (client: unknown, chanInfo: unknown, cfg: unknown) => SFTPWrapper & {
    push(data: Buffer): void;
    _version: number;
  };
};

const DATA = 103;
const STATUS = 101;
const HANDLE = 102;

function packet(type: number, id: number, body: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUInt32BE(1 + 4 + body.length, 0);
  head[4] = type;
  head.writeUInt32BE(id, 5);
  return Buffer.concat([head, body]);
}
/** An SFTP string: uint32 length, then the bytes. */
function str(b: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(b.length);
  return Buffer.concat([len, b]);
}

/** An SFTP client channel whose outbound packets go nowhere; replies come in by push(). */
function fakeSftp() {
  const client = { _protocol: { _remoteIdentRaw: Buffer.from('SSH-2.0-OpenSSH_9.2p1'), channelData() {} } };
  const chan = { id: 0, window: 1 << 30, packetSize: 32768, state: 'open' };
  const sftp = new SFTP(client, { type: 'sftp', incoming: { ...chan }, outgoing: { ...chan } }, {});
  sftp._version = 3;
  return sftp;
}

type Outcome = { err?: string; bytes?: string };
const digest = (b: Buffer) => `${b.length}:${createHash('sha1').update(b).digest('hex')}`;

describe('DATA answers that span chunks', () => {
  it('reach the right READ whole, wherever the chunks split, and other answers are untouched', () => {
    fc.assert(
      fc.property(
        fc.array(
          fc.record({
            kind: fc.constantFrom('data', 'short', 'toobig', 'orphan', 'status', 'handle'),
            size: fc.integer({ min: 1, max: 70_000 }),
          }),
          { minLength: 1, maxLength: 12 },
        ),
        fc.array(fc.integer({ min: 1, max: 70_000 }), { minLength: 1, maxLength: 40 }),
        (answers, cuts) => {
          const sftp = fakeSftp();
          const outcomes: Outcome[] = [];
          const expected: Outcome[] = [];
          const stream: Buffer[] = [];
          for (const [i, { kind, size }] of answers.entries()) {
            if (kind === 'orphan') {
              stream.push(packet(DATA, 0x7fff0000 + i, str(randomBytes(size))));
              continue;
            }
            if (kind === 'handle') {
              sftp.open('/x', 'r', (err, h) => outcomes.push(err ? { err: err.message } : { bytes: digest(h) }));
            } else {
              const buf = Buffer.alloc(size + 10, 0xee);
              sftp.read(Buffer.from('h'), buf, 10, size, 0, (err, nb, data) =>
                outcomes.push(err ? { err: (err as Error).message } : { bytes: digest(data.subarray(0, nb)) }));
            }
            // The request ssh2 just sent: its id, and for a READ the length it asked for.
            const id = (sftp as unknown as { _writeReqid: number })._writeReqid;
            if (kind === 'data' || kind === 'short') {
              const body = randomBytes(kind === 'data' ? size : Math.max(1, size >> 1));
              stream.push(packet(DATA, id, str(body)));
              expected.push({ bytes: digest(body) });
            } else if (kind === 'toobig') {
              // Stock ssh2 hands over what fits; the patch must do the same.
              const body = randomBytes(size + 1);
              stream.push(packet(DATA, id, str(body)));
              expected.push({ bytes: digest(body.subarray(0, size)) });
            } else if (kind === 'status') {
              const msg = Buffer.from('no such file');
              stream.push(packet(STATUS, id, Buffer.concat([Buffer.from([0, 0, 0, 2]), str(msg), str(Buffer.from('en'))])));
              expected.push({ err: 'no such file' });
            } else {
              const h = randomBytes(size % 256);
              stream.push(packet(HANDLE, id, str(h)));
              expected.push({ bytes: digest(h) });
            }
          }
          const all = Buffer.concat(stream);
          let p = 0;
          for (let c = 0; p < all.length; c++) {
            const end = Math.min(all.length, p + cuts[c % cuts.length]!);
            // A fresh copy per chunk, as a socket read is.
            sftp.push(Buffer.from(all.subarray(p, end)));
            p = end;
          }
          expect(outcomes).toEqual(expected);
        },
      ),
      { numRuns: 300 },
    );
  });
});

let sshd: Sshd;
beforeAll(async () => { sshd = await startSshd(); });
afterAll(async () => { await sshd?.stop(); if (sshd) removeSshdDir(sshd); });

const call = <T>(f: (cb: (err: Error | null | undefined, v: T) => void) => void) =>
  new Promise<T>((resolve, reject) => f((err, v) => (err ? reject(err) : resolve(v))));

describe('DATA answers, end to end against OpenSSH', () => {
  it('a 16 MiB file read with 128 KiB READs in parallel arrives byte for byte', async () => {
    const data = randomBytes(16 << 20);
    const path = join(sshd.storeDir, 'reply.bin');
    writeFileSync(path, data);
    const link = await connectSsh({
      host: sshd.host, port: sshd.port, username: sshd.user, remotePath: sshd.storeDir,
      privateKey: readFileSync(sshd.userKeyPath), identityFile: sshd.userKeyPath,
      strictHostKeyChecking: 'accept-new', keepaliveInterval: 0, keepaliveCountMax: 3, connectTimeout: 5000,
    });
    try {
      const sftp = await link.openSftp();
      const h = await call<Buffer>((cb) => sftp.open(path, 'r', cb));
      const got = Buffer.alloc(data.length);
      const reads: Promise<unknown>[] = [];
      // Odd offsets and lengths too, so answers start and end mid-packet.
      for (let off = 0; off < data.length;) {
        const len = Math.min(off % 3 ? 128 * 1024 : 100_003, data.length - off);
        const at = off;
        reads.push(call<number>((cb) => sftp.read(h, got, at, len, at, cb as never)).then((nb) => expect(nb).toBe(len)));
        off += len;
      }
      await Promise.all(reads);
      await call((cb) => sftp.close(h, cb as never));
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      expect(sha(got)).toBe(sha(data));
    } finally {
      link.close();
    }
  });
});
