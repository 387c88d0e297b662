// Hostile input to the plugin socket: thousands of generated requests
// (fast-check) with malformed JSON, wrong types, missing fields, names with
// '/', '..', NUL or 10,000 characters; 1 MiB bodies; 200 concurrent requests;
// clients that send headers and then stall. Every one gets an answer with
// Err (or a refusal), and after each batch the daemon still answers Activate,
// its state file still parses, and its memory stays bounded.
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { removeDaemonDir, removeDist, startDaemon, type DaemonProc } from './helpers/daemon';

let d: DaemonProc;
beforeAll(async () => {
  d = await startDaemon({ marker: true, env: { LOG_LEVEL: 'warn' } });
});
afterAll(async () => {
  const r = await d?.stop();
  expect(r?.code).toBe(0);
  if (d) removeDaemonDir(d.dir);
  removeDist();
});

const rssKiB = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${d.proc.pid}/status`, 'utf8'))![1]);
const VOLUME_NAME = /^[a-zA-Z0-9][a-zA-Z0-9_.-]+$/;

async function healthy(): Promise<void> {
  expect((await d.call('/Plugin.Activate')).json).toEqual({ Implements: ['VolumeDriver'] });
  let state: { version: number; volumes: { name: string; mountIds: string[] }[] } = { version: 2, volumes: [] };
  try {
    state = JSON.parse(readFileSync(join(d.stateDir, 'tsfs.json'), 'utf8'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  expect(state.version).toBe(2);
  for (const v of state.volumes) {
    expect(v.name).toMatch(VOLUME_NAME);
    expect(v.name.length).toBeLessThanOrEqual(255);
  }
  const listed = ((await d.call('/VolumeDriver.List', {})).json.Volumes as { Name: string }[]).map((v) => v.Name).sort();
  expect(listed).toEqual(state.volumes.map((v) => v.name).sort());
}

const ENDPOINTS = ['Create', 'Remove', 'Mount', 'Unmount', 'Path', 'Get', 'List', 'Capabilities'].map((e) => `/VolumeDriver.${e}`);
const nastyName = fc.oneof(
  fc.constantFrom('vol1', 'vol2', 'ok-name', '../etc', 'a/b', '..', '.', 'x\u0000y', 'a'.repeat(10_000), '', ' ', 'a', '-lead', 'vol1/../vol2'),
  fc.string({ maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.integer(),
  fc.constant(null),
  fc.array(fc.string(), { maxLength: 3 }),
  fc.dictionary(fc.string({ maxLength: 5 }), fc.string({ maxLength: 5 }), { maxKeys: 2 }),
);
// Only loopback port 1 as a host: anything that gets as far as connecting is refused at once.
const opts = fc.oneof(
  fc.record(
    {
      sshcmd: fc.constantFrom('u@127.0.0.1:/x', 'u@127.0.0.1', '127.0.0.1:/x', 'u@:/x', '', 'u@127.0.0.1:/x -o ProxyCommand=sh'),
      port: fc.constantFrom('1', '0', '70000', 'x', '22; rm'),
      check: fc.constantFrom('false', 'no', 'true'),
      password: fc.string({ maxLength: 30 }),
      host_key: fc.constantFrom('SHA256:' + 'A'.repeat(43), 'nope'),
      uid: fc.constantFrom('0', '-1', '1e9', 'root'),
      allow_other: fc.constantFrom('', 'yes', 'maybe'),
    },
    { requiredKeys: [] },
  ),
  fc.dictionary(fc.string({ maxLength: 30 }), fc.oneof(fc.string({ maxLength: 30 }), fc.integer(), fc.boolean()), { maxKeys: 5 }),
  fc.anything({ maxDepth: 2 }),
);
const body = fc.oneof(
  fc.record({ Name: nastyName, Opts: opts, ID: nastyName }, { requiredKeys: [] }).map((b) => JSON.stringify(b)),
  fc.json({ maxDepth: 3 }),
  fc.string({ maxLength: 200 }),
  fc.constantFrom('', '{', '{"Name":', 'null', '[]', '"str"', '{"Name":"vol1"}}', '\u0000\u0001', '{"Name":"vol1","Opts":{"sshcmd":"u@127.0.0.1:/x","check":"false","host_key":"SHA256:' + 'A'.repeat(43) + '"}}'),
);
const request = fc.record({ endpoint: fc.oneof(fc.constantFrom(...ENDPOINTS), fc.constantFrom('/Plugin.Activate', '/', '/VolumeDriver.', '/x/../VolumeDriver.List')), body });

describe('generated requests', () => {
  it('thousands of requests: every one answered with JSON (Err on failure); daemon healthy after each batch', async () => {
    const rssBefore = rssKiB();
    let sent = 0;
    const statuses = new Map<number, number>();
    for (let batch = 0; batch < 12; batch++) {
      const reqs = fc.sample(request, { numRuns: 250, seed: 1000 + batch });
      // 25 at a time: concurrent, but bounded so the test measures the daemon, not the socket backlog.
      for (let i = 0; i < reqs.length; i += 25) {
        await Promise.all(
          reqs.slice(i, i + 25).map(async (r) => {
            const a = await d.call(r.endpoint, r.body, { raw: true });
            sent++;
            statuses.set(a.status, (statuses.get(a.status) ?? 0) + 1);
            expect([200, 400, 404, 413, 500]).toContain(a.status);
            expect(a.json).toBeTypeOf('object');
            if (a.status !== 200) expect(typeof a.json.Err).toBe('string');
          }),
        );
      }
      await healthy();
    }
    const rssAfter = rssKiB();
    console.log(`fuzz: ${sent} requests, statuses ${JSON.stringify(Object.fromEntries(statuses))}, daemon RSS ${rssBefore} -> ${rssAfter} KiB`);
    expect(rssAfter).toBeLessThan(400 * 1024);
  });
});

describe('hostile shapes', () => {
  it('names with /, .., NUL or 10,000 characters are refused with a clear Err', async () => {
    for (const Name of ['a/b', '../x', '..', 'x\u0000y', 'n'.repeat(10_000)]) {
      const a = await d.call('/VolumeDriver.Create', { Name, Opts: { sshcmd: 'u@127.0.0.1:/x', check: 'false', host_key: 'SHA256:' + 'A'.repeat(43) } });
      expect(a.status).toBe(500);
      expect(a.json.Err).toMatch(/invalid volume name/);
      expect(a.text.length).toBeLessThan(500);
    }
    for (const body of [{ Name: 5 }, { Name: ['x'] }, {}, { Name: 'vol1', Opts: 'sshcmd=x' }]) {
      const a = await d.call('/VolumeDriver.Create', body);
      expect(a.status).toBe(500);
      expect(typeof a.json.Err).toBe('string');
    }
    await healthy();
  });

  it('1 MiB bodies are refused with 413 and 200 concurrent requests all answered', async () => {
    const big = await Promise.all([1, 2, 3, 4].map(() => d.call('/VolumeDriver.Create', 'x'.repeat(1024 * 1024), { raw: true })));
    for (const a of big) {
      expect(a.status).toBe(413);
      expect(a.json.Err).toMatch(/larger than 64 KiB/);
    }
    const many = await Promise.all(Array.from({ length: 200 }, (_, i) => d.call(i % 2 ? '/VolumeDriver.List' : '/VolumeDriver.Get', { Name: `nope${i}` })));
    expect(many.filter((a) => a.status === 200 || a.json.Err).length).toBe(200);
    await healthy();
  });

  it('clients that send headers and then stall or trickle are cut off', async () => {
    const stalled = (payload: string) =>
      new Promise<{ answer: string; closed: boolean }>((resolve) => {
        const s = connect(d.socket);
        let answer = '';
        s.on('data', (b) => (answer += b.toString()));
        s.on('error', () => undefined);
        s.on('close', () => resolve({ answer, closed: true }));
        s.write(payload);
      });
    // Headers never finished; headers done but a body promised and never sent; a body trickled a byte at a time.
    const trickler = (async () => {
      const s = connect(d.socket);
      let closed = false;
      let answer = '';
      s.on('data', (b) => (answer += b.toString()));
      s.on('error', () => undefined);
      s.on('close', () => (closed = true));
      s.write('POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n');
      for (let i = 0; i < 400 && !closed; i++) {
        s.write('x');
        await new Promise((r) => setTimeout(r, 100));
      }
      s.destroy();
      return { answer, closed };
    })();
    const results = await Promise.all([
      stalled('POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\n'),
      stalled('POST /VolumeDriver.List HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"Na'),
      trickler,
    ]);
    for (const r of results) {
      expect(r.closed).toBe(true);
      if (r.answer) expect(r.answer).toMatch(/^HTTP\/1\.1 408/);
    }
    await healthy();
  });
});
