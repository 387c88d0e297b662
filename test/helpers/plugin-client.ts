// Talk to a tsfs daemon's unix socket exactly as dockerd does: POST, a JSON
// body, no Content-Type, Accept v1.2.
import { request } from 'node:http';

export interface PluginAnswer {
  status: number;
  contentType: string | undefined;
  body: Record<string, unknown>;
}

export function pluginRequest(socketPath: string, endpoint: string, body: unknown = {}): Promise<PluginAnswer> {
  const payload = typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath, path: `/${endpoint}`, method: 'POST', headers: { Accept: 'application/vnd.docker.plugins.v1.2+json' } },
      (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          let parsed: Record<string, unknown>;
          try {
            parsed = JSON.parse(text);
          } catch {
            parsed = { Err: `non-JSON answer: ${text.slice(0, 200)}` };
          }
          resolve({ status: res.statusCode ?? 0, contentType: res.headers['content-type'], body: parsed });
        });
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** pluginRequest that throws the daemon's Err. */
export async function pluginCall(socketPath: string, endpoint: string, body: unknown = {}): Promise<Record<string, unknown>> {
  const a = await pluginRequest(socketPath, endpoint, body);
  if (a.body.Err) throw new Error(`${endpoint}: ${a.body.Err}`);
  return a.body;
}
