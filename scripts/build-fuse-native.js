#!/usr/bin/env node
// Compile fuse-native from its (patched, see patches/) C source at install.
// fuse-native ships prebuilds/linux-x64 and its install script
// (node-gyp-build) uses them, so without this step the patch to
// fuse-native.c (utimens mtime, create flags) would never run.
// node-gyp-build loads build/Release before prebuilds/, so building there is
// enough. Fails the install loudly rather than fall back to the buggy prebuild.
'use strict';
const { execFileSync } = require('node:child_process');
const { existsSync } = require('node:fs');
const path = require('node:path');

const pkgDir = path.join(__dirname, '..', 'node_modules', 'fuse-native');
if (!existsSync(path.join(pkgDir, 'fuse-native.c'))) {
  console.error('build-fuse-native: node_modules/fuse-native is missing; run npm ci');
  process.exit(1);
}

// npm sets npm_config_node_gyp in lifecycle scripts; otherwise use npm's copy.
const candidates = [
  process.env.npm_config_node_gyp,
  path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
].filter(Boolean);
const gyp = candidates.find((p) => existsSync(p));
if (!gyp) {
  console.error(`build-fuse-native: node-gyp not found (looked at ${candidates.join(', ')}); install npm's node-gyp`);
  process.exit(1);
}

// Offline builds (Docker build stage, CI without network): point node-gyp at
// the headers installed next to this node binary instead of downloading them.
const args = [gyp, 'rebuild'];
const prefix = path.resolve(path.dirname(process.execPath), '..');
if (existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) args.push(`--nodedir=${prefix}`);

try {
  execFileSync(process.execPath, args, { cwd: pkgDir, stdio: 'inherit' });
} catch (e) {
  console.error('build-fuse-native: compiling fuse-native failed; it needs python3, make, a C compiler and the Node headers');
  process.exit(1);
}
const loaded = require(require.resolve('node-gyp-build', { paths: [pkgDir] })).path(pkgDir);
if (!loaded.includes(`${path.sep}build${path.sep}Release${path.sep}`)) {
  console.error(`build-fuse-native: fuse-native would load ${loaded}, not the patched build`);
  process.exit(1);
}
console.log(`build-fuse-native: using ${loaded}`);
