// `~` in sshcmd's path means the SSH user's home directory, as it does for
// ssh, scp and sftp. SFTP itself has no `~`: OpenSSH offers
// expand-path@openssh.com (which also knows `~otheruser`), and every server
// resolves "." to the login directory, which is the home directory.
import type { SFTPWrapper } from 'ssh2';

const EXPAND_PATH = 'expand-path@openssh.com';

export class HomePathError extends Error {
  override name = 'HomePathError';
}

const call = (f: (cb: (err: Error | undefined | null, p: string) => void) => void) =>
  new Promise<string>((resolve, reject) => f((err, p) => (err ? reject(err) : resolve(p))));

/** `~`, `~/x` or `~user/x` made absolute; any other path is returned as it is. */
export async function expandHome(sftp: SFTPWrapper, ext: Set<string>, path: string): Promise<string> {
  if (!path.startsWith('~')) return path;
  const slash = path.indexOf('/');
  const user = path.slice(1, slash === -1 ? undefined : slash);
  const rest = slash === -1 ? '' : path.slice(slash + 1).replace(/^\/+/, '');
  if (ext.has(EXPAND_PATH)) {
    // expand-path gives the home as the server's realpath; the rest is joined here so a missing directory is reported by the caller, not as a failed expansion.
    const home = await call((cb) => sftp.ext_openssh_expandPath(user ? `~${user}` : '~', cb));
    return join(home, rest);
  }
  if (user) {
    throw new HomePathError(`~${user} in sshcmd needs the server's expand-path@openssh.com extension, which this server does not offer: give the absolute path of that user's directory`);
  }
  return join(await call((cb) => sftp.realpath('.', cb)), rest);
}

function join(home: string, rest: string): string {
  if (rest === '') return home;
  return home.endsWith('/') ? home + rest : `${home}/${rest}`;
}
