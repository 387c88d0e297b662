// Child process that drives a FUSE mount during fault-injection tests (the
// test process serves the mount, so it never touches it itself). Prints one
// line per event on stdout; the last line is a JSON result.
//   read <file>        read 1 MiB at a time, "progress" after each, then {sha256, bytes}
//   hold-write <file>  write 1 MiB, fstat (drains our writes), "ready", wait for a stdin line,
//                      then fsync and close: {fsync, close} as "ok" or the error code
//   hold-read <file>   read 1 MiB, "ready", wait for a stdin line, read the next 1 MiB: {sha256, bytes} or {error}
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';

const [mode, file] = process.argv.slice(2);
const MiB = 1024 * 1024;
const out = (v) => process.stdout.write((typeof v === 'string' ? v : JSON.stringify(v)) + '\n');
const code = (f) => {
  try {
    f();
    return 'ok';
  } catch (e) {
    return e.code ?? e.message;
  }
};
const nextLine = () => new Promise((r) => createInterface({ input: process.stdin }).once('line', r));
const pause = (ms) => new Promise((r) => setTimeout(r, ms));

if (mode === 'read') {
  const fd = openSync(file, 'r');
  const h = createHash('sha256');
  const buf = Buffer.alloc(MiB);
  let bytes = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, 0, MiB, bytes);
      if (n === 0) break;
      h.update(buf.subarray(0, n));
      bytes += n;
      out('progress');
      await pause(3); // slow enough that the test's fault lands mid-read
    }
    out({ sha256: h.digest('hex'), bytes });
  } catch (e) {
    out({ error: e.code ?? e.message, bytes });
  }
} else if (mode === 'hold-write') {
  const fd = openSync(file, 'w');
  const data = Buffer.alloc(MiB, 0x5a);
  writeSync(fd, data, 0, MiB, 0);
  fstatSync(fd);
  out('ready');
  await nextLine();
  const fsync = code(() => fsyncSync(fd));
  const close = code(() => closeSync(fd));
  out({ fsync, close });
} else if (mode === 'hold-read') {
  const fd = openSync(file, 'r');
  const h = createHash('sha256');
  const buf = Buffer.alloc(MiB);
  const n1 = readSync(fd, buf, 0, MiB, 0);
  h.update(buf.subarray(0, n1));
  out('ready');
  await nextLine();
  try {
    const n2 = readSync(fd, buf, 0, MiB, MiB);
    h.update(buf.subarray(0, n2));
    closeSync(fd);
    out({ sha256: h.digest('hex'), bytes: n1 + n2 });
  } catch (e) {
    out({ error: e.code ?? e.message });
  }
}
process.exit(0);
