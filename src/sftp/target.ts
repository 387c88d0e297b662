// Where and how to reach one volume's central store. Built from the volume's
// validated options (src/options.ts); everything below src/sftp and src/fs
// takes this and never sees raw user input.

export type HostKeyPolicy = 'yes' | 'accept-new' | 'no';

export interface SshTarget {
  host: string;
  port: number;
  username: string;
  /** Remote directory; '' means the login directory. */
  remotePath: string;
  password?: string;
  /** Private key material (already read from IdentityFile or the default keys). */
  privateKey?: Buffer;
  /** Path the key came from, only for error messages. */
  identityFile?: string;
  passphrase?: string;
  /** Pinned host key fingerprint, `SHA256:<base64 without padding>` as ssh-keygen prints it. */
  hostKey?: string;
  strictHostKeyChecking: HostKeyPolicy;
  /** Milliseconds between keepalives; 0 disables. */
  keepaliveInterval: number;
  /** Missed keepalives before the link counts as dead. */
  keepaliveCountMax: number;
  /** Milliseconds to wait for TCP connect + SSH handshake. */
  connectTimeout: number;
  /** The option that pins this host's key, for messages (`host_key`, or `ProxyJumpHostKey` for a bastion). */
  hostKeyOption?: string;
  /** Bastion (ProxyJump) the connection goes through, with its own key, auth and host key pin. */
  jump?: SshTarget;
}

/** `host:port` with IPv6 literals bracketed, for messages. */
export function describeTarget(t: Pick<SshTarget, 'host' | 'port'>): string {
  return t.host.includes(':') ? `[${t.host}]:${t.port}` : `${t.host}:${t.port}`;
}

/**
 * The key to pin after a connection presented `seen`: under accept-new with
 * nothing pinned yet, the first key seen is the one every later connection
 * must present (so a swapped server is refused). Undefined: nothing to pin.
 */
export function hostKeyToPin(t: Pick<SshTarget, 'hostKey' | 'strictHostKeyChecking'>, seen: string | undefined): string | undefined {
  return !t.hostKey && t.strictHostKeyChecking === 'accept-new' && seen ? seen : undefined;
}
