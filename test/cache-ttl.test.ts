// The caches never make the store lie for longer than the volume's
// cache_timeout: a change made on the server by another host (here: written
// straight into the server's directory) shows through the mount once the TTL
// (plus the kernel's attribute timeout, 1 s at most) has passed, and at once
// with cache_timeout=0. Attributes are cached three times over (the JS
// AttrCache, its copy in fuse-native's C table, the kernel); each must expire.
import { unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fuseMounts, mountForTest, runChild, type TestMount } from './helpers/fs-mount';
import { removeSshdDir, startSshd, type Sshd } from './helpers/sshd';

/** What a container sees of the directory: f's size and text, the names, whether h exists. */
const LOOK = `
const fs = require('fs'), p = require('path'), d = process.argv[1], out = {};
try { out.size = fs.statSync(p.join(d, 'f')).size; out.text = fs.readFileSync(p.join(d, 'f'), 'utf8'); } catch (e) { out.f = e.code; }
out.names = fs.readdirSync(d).sort();
try { fs.statSync(p.join(d, 'g')); out.g = 'exists'; } catch (e) { out.g = e.code; }
try { fs.statSync(p.join(d, 'h')); out.h = 'exists'; } catch (e) { out.h = e.code; }
console.log(JSON.stringify(out));
`;

async function look(dir: string): Promise<Record<string, unknown>> {
  const r = await runChild(process.execPath, ['-e', LOOK, dir]);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout);
}

async function write(path: string, text: string): Promise<void> {
  const r = await runChild(process.execPath, ['-e', 'require("fs").writeFileSync(process.argv[1], process.argv[2])', path, text]);
  expect(r.code).toBe(0);
}

let sshd: Sshd;
const mounts: TestMount[] = [];

beforeAll(async () => {
  sshd = await startSshd();
});

afterAll(async () => {
  const mps = mounts.map((m) => m.mountpoint);
  try {
    for (const m of mounts) await m.cleanup();
  } finally {
    await sshd?.stop();
    if (sshd) removeSshdDir(sshd);
  }
  for (const mp of mps) expect(fuseMounts().filter((l) => l.includes(mp))).toEqual([]);
});

/** Through the mount: f and h exist and everything has been looked at once (cached). */
async function seed(m: TestMount): Promise<void> {
  await write(join(m.mountpoint, 'f'), 'a');
  await write(join(m.mountpoint, 'h'), 'to be removed elsewhere');
  expect(await look(m.mountpoint)).toEqual({ size: 1, text: 'a', names: ['f', 'h'], g: 'ENOENT', h: 'exists' });
}

/** Another host changes the directory on the server. */
function changeOnServer(m: TestMount): void {
  writeFileSync(join(m.remoteDir, 'f'), 'abcdef');
  writeFileSync(join(m.remoteDir, 'g'), 'new elsewhere');
  unlinkSync(join(m.remoteDir, 'h'));
}

const FRESH = { size: 6, text: 'abcdef', names: ['f', 'g'], g: 'exists', h: 'ENOENT' };

describe('changes made on the server by another host', () => {
  it('show through the mount once cache_timeout has passed', async () => {
    const ttl = 2;
    const m = await mountForTest(sshd, { subdir: 'ttl2', cacheTimeout: ttl });
    mounts.push(m);
    await seed(m);
    changeOnServer(m);
    // The bound, not a speed: the TTL, the kernel's attribute timeout (1 s), and slack.
    await new Promise((r) => setTimeout(r, (ttl + 1) * 1000 + 500));
    expect(await look(m.mountpoint)).toEqual(FRESH);
  });

  it('show at once with cache_timeout=0', async () => {
    const m = await mountForTest(sshd, { subdir: 'ttl0', cacheTimeout: 0 });
    mounts.push(m);
    await seed(m);
    changeOnServer(m);
    expect(await look(m.mountpoint)).toEqual(FRESH);
  });
});
