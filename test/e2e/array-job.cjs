'use strict';
// One task of an AWS Batch array job, as tsfs's ML users run it: save
// <STORAGE>/<AWS_BATCH_JOB_ARRAY_INDEX>/model/model.h5 the way HDF5 does:
// stream the datasets out, reopen read+write, check the signature, seek,
// rewrite a chunk in the middle and the superblock at the start, extend the
// file, fsync. Runs inside a container (`node array-job.cjs`), where sync I/O
// on the mount is fine: the FUSE server is the plugin, not this process.
// `expected(index)` is what the file must hold afterwards, so the test and
// `make demo` can check the store's copy byte for byte.
const { createHash } = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const MiB = 1024 * 1024;
const HDF5_SIGNATURE = Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]);

function sizeOf() {
  const mib = Number(process.env.MODEL_MIB || 6);
  if (!(mib > 0 && mib <= 1024)) throw new Error(`MODEL_MIB must be 1..1024, got ${process.env.MODEL_MIB}`);
  return Math.floor(mib * MiB);
}

/** The datasets as first written: a per-index byte stream (sha256 in counter mode), HDF5 signature first. */
function initial(index, size = sizeOf()) {
  const buf = Buffer.alloc(size);
  for (let off = 0, k = 0; off < size; off += 32, k++) {
    createHash('sha256').update(`tsfs-model:${index}:${k}`).digest().copy(buf, off);
  }
  HDF5_SIGNATURE.copy(buf, 0);
  return buf;
}

/** The rewrites after reopening: offsets deliberately unaligned to 4 KiB pages. */
function edits(index, size = sizeOf()) {
  const chunk = Buffer.alloc(64 * 1024, 0x41 + (index % 26));
  const superblock = Buffer.alloc(96, 0);
  HDF5_SIGNATURE.copy(superblock, 0);
  superblock.write(`superblock index=${index} eof=${size + 100 * 1024}`, 8, 'latin1');
  const tail = Buffer.alloc(100 * 1024, 0x7a);
  return [
    { offset: Math.min(MiB + 4096 * index + 17, size - chunk.length), data: chunk },
    { offset: 0, data: superblock },
    { offset: size, data: tail },
  ];
}

function expected(index, size = sizeOf()) {
  const es = edits(index, size);
  const end = Math.max(size, ...es.map((e) => e.offset + e.data.length));
  const buf = Buffer.alloc(end);
  initial(index, size).copy(buf, 0);
  for (const e of es) e.data.copy(buf, e.offset);
  return buf;
}

const sha256 = (b) => createHash('sha256').update(b).digest('hex');

function modelPath(root, index) {
  return path.join(root, String(index), 'model', 'model.h5');
}

function run() {
  const raw = process.env.AWS_BATCH_JOB_ARRAY_INDEX;
  if (!/^\d+$/.test(raw || '')) throw new Error(`AWS_BATCH_JOB_ARRAY_INDEX must be a whole number, got ${JSON.stringify(raw)}`);
  const index = Number(raw);
  const root = process.env.STORAGE || '/storage';
  const size = sizeOf();
  const file = modelPath(root, index);
  fs.mkdirSync(path.dirname(file), { recursive: true });

  const data = initial(index, size);
  let fd = fs.openSync(file, 'w');
  for (let off = 0; off < size; off += MiB) fs.writeSync(fd, data, off, Math.min(MiB, size - off), off);
  fs.closeSync(fd);

  fd = fs.openSync(file, 'r+');
  const sig = Buffer.alloc(8);
  fs.readSync(fd, sig, 0, 8, 0);
  if (!sig.equals(HDF5_SIGNATURE)) throw new Error(`${file}: signature not read back after reopen`);
  for (const e of edits(index, size)) fs.writeSync(fd, e.data, 0, e.data.length, e.offset);
  fs.fsyncSync(fd);
  fs.closeSync(fd);

  const back = fs.readFileSync(file);
  const want = expected(index, size);
  const result = { index, path: file, size: back.length, sha256: sha256(back), ok: back.equals(want) };
  process.stdout.write(JSON.stringify(result) + '\n');
  if (!result.ok) process.exit(1);
}

module.exports = { expected, modelPath, sha256, sizeOf };
if (require.main === module) run();
