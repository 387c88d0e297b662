// A fault-injection TCP proxy on loopback: the test decides when the link
// between tsfs and sshd breaks (cut), or silently stops carrying bytes
// (stall, what a dead NAT entry or a pulled cable looks like to TCP).
import { createServer, connect, type Server, type Socket } from 'node:net';

export interface FaultProxy {
  port: number;
  /** Destroy every open connection; new ones are still accepted. */
  cut(): void;
  /** Stop forwarding in both directions without closing anything (true), or resume (false). */
  stall(on: boolean): void;
  /** Refuse (immediately close) new connections while on. */
  refuse(on: boolean): void;
  /** Connections accepted so far. */
  readonly accepted: number;
  close(): Promise<void>;
}

export async function startProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<FaultProxy> {
  const pairs = new Set<[Socket, Socket]>();
  let stalled = false;
  let refusing = false;
  let accepted = 0;

  const server: Server = createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = connect(targetPort, targetHost);
    const pair: [Socket, Socket] = [client, upstream];
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', drop).on('close', drop);
    upstream.on('error', drop).on('close', drop);
    // Manual forwarding rather than pipe(): a stall must hold bytes back
    // while keeping both sockets open, which pause() on the readers does.
    const forward = (from: Socket, to: Socket) => {
      from.on('data', (chunk) => {
        if (!to.write(chunk)) from.pause();
      });
      to.on('drain', () => {
        if (!stalled) from.resume();
      });
    };
    forward(client, upstream);
    forward(upstream, client);
    if (stalled) {
      client.pause();
      upstream.pause();
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;

  const cut = () => {
    for (const [a, b] of [...pairs]) {
      a.destroy();
      b.destroy();
    }
    pairs.clear();
  };

  return {
    port,
    get accepted() {
      return accepted;
    },
    cut,
    stall(on) {
      stalled = on;
      for (const [a, b] of pairs) {
        if (on) {
          a.pause();
          b.pause();
        } else {
          a.resume();
          b.resume();
        }
      }
    },
    refuse(on) {
      refusing = on;
    },
    close() {
      cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}
