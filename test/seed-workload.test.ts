// The seed's workload, as an ML array job runs it: 8 containers (here: child
// processes) each save /storage/<index>/model/model.h5 the way HDF5 does —
// write the file, close, reopen read+write, seek, rewrite a block, read it
// back, close — all at once through one mount. Every file is then read from
// the server's directory directly and must match, byte for byte, what the
// test computes independently. And one large sequential write (dd with
// fsync) must arrive intact.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuseMounts, h5Writer, localScratch, mountForTest, runChild, type TestMount } from './helpers/fs-mount';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';
// @ts-ignore -- plain ESM helper without types; vitest loads it
import { H5, pattern, sha256 } from './helpers/posix-scenarios.mjs';

const JOBS = 8;
let sshd: Sshd;
let m: TestMount | undefined;
let scratch: { dir: string; remove(): void };

beforeAll(async () => {
  sshd = await startSshd();
  scratch = localScratch('tsfs-seed-');
  m = await mountForTest(sshd);
});

afterAll(async () => {
  const mp = m?.mountpoint;
  try {
    await m?.cleanup();
  } finally {
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
    scratch?.remove();
  }
  if (mp) expect(fuseMounts().filter((l) => l.includes(mp))).toEqual([]);
});

/** What model.h5 of job `i` must hold: its body with the rewritten block in place. */
function expectedModel(i: number): string {
  const body: Buffer = pattern(i, H5.size);
  pattern(10_000 + i, H5.block).copy(body, H5.offset(i));
  return sha256(body);
}

const fileDigest = (p: string) =>
  new Promise<string>((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(p).on('data', (d) => h.update(d)).on('end', () => resolve(h.digest('hex'))).on('error', reject);
  });

describe('the seed workload through the mount (OpenSSH sftp-server)', () => {
  it(`${JOBS} concurrent HDF5-style writers each leave exactly their model.h5 on the server`, async () => {
    const results = await Promise.all(Array.from({ length: JOBS }, (_, i) => h5Writer(m!.mountpoint, i)));
    for (let i = 0; i < JOBS; i++) {
      const want = expectedModel(i);
      // What the job read back through the mount before closing...
      expect({ index: i, seenByJob: results[i].sha256 }).toEqual({ index: i, seenByJob: want });
      // ...and what is on the central store.
      const onServer = readFileSync(join(sshd.storeDir, String(i), 'model', 'model.h5'));
      expect({ index: i, size: onServer.length, sha256: sha256(onServer) }).toEqual({ index: i, size: H5.size, sha256: want });
    }
  });

  it('a 64 MiB file written with dd bs=1M conv=fsync arrives intact', async () => {
    const src = join(scratch.dir, 'big.bin');
    const parts: Buffer[] = [];
    for (let i = 0; i < 64; i++) parts.push(pattern(7000 + i, 1024 * 1024));
    writeFileSync(src, Buffer.concat(parts));
    const want = execFileSync('sha256sum', [src]).toString().split(' ')[0];
    const dd = await runChild('dd', [`if=${src}`, `of=${join(m!.mountpoint, 'big.bin')}`, 'bs=1M', 'conv=fsync']);
    expect({ code: dd.code, stderr: dd.stderr.split('\n')[0] }).toEqual({ code: 0, stderr: '64+0 records in' });
    expect(await fileDigest(join(sshd.storeDir, 'big.bin'))).toBe(want);
    // Read back through the mount by a child, too.
    const back = await runChild('sha256sum', [join(m!.mountpoint, 'big.bin')]);
    expect(back.stdout.split(' ')[0]).toBe(want);
  });
});
