// Test-only entry point: the real daemon (built main.js, real socket, state,
// driver and volume code) with a stand-in filesystem that mounts nothing: it
// writes a marker file into the mountpoint and appends a line to
// TSFS_MARKER_LOG for every mount and unmount. Used where a test needs Mount
// to succeed without depending on the SFTP filesystem.
const { appendFileSync, existsSync, writeFileSync, rmSync } = require('node:fs');
const { join } = require('node:path');
const { main } = require(join(process.env.TSFS_DIST, 'main.js'));

const note = (line) => appendFileSync(process.env.TSFS_MARKER_LOG, line + '\n');

main(async (opts) => {
  // A mount held until the test creates TSFS_MARKER_GATE, so tests can send
  // requests while a restore is in flight (no timing involved).
  const gate = process.env.TSFS_MARKER_GATE;
  while (gate && !existsSync(gate)) await new Promise((r) => setTimeout(r, 20));
  const marker = join(opts.mountpoint, '.tsfs-marker');
  // Only non-secret fields: the tests scan the whole tree for the password.
  writeFileSync(marker, JSON.stringify({ host: opts.target.host, port: opts.target.port, remotePath: opts.target.remotePath, readOnly: opts.readOnly }));
  note(`mount ${opts.mountpoint} hostKey=${opts.target.hostKey ?? ''}`);
  // A stand-in for a tsfs bug: a promise whose rejection nobody handles.
  if (opts.target.remotePath.endsWith('/stray-rejection')) void Promise.reject(new Error('stray rejection from the marker filesystem'));
  return {
    linkState: 'connected',
    async unmount() {
      rmSync(marker, { force: true });
      note(`unmount ${opts.mountpoint}`);
    },
  };
});
