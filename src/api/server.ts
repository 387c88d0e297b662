// The VolumeDriver HTTP API on the plugin's unix socket. dockerd sends JSON
// with no Content-Type (only `Accept: application/vnd.docker.plugins.v1.2+json`),
// so the body is read raw whatever the type, bounded, and parsed here.
import express, { type NextFunction, type Request, type Response } from 'express';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { TsfsError, codeOf } from '../errors';
import { CreateRequestSchema, MountRequestSchema, NameRequestSchema, PLUGIN_CONTENT_TYPE, type VolumeDriver } from './protocol';

export const MAX_BODY_BYTES = 64 * 1024;

/** Endpoints logged at info: what changes volumes or mounts (and Activate, once per enable). */
const CHANGES_STATE = new Set(['/Plugin.Activate', '/VolumeDriver.Create', '/VolumeDriver.Remove', '/VolumeDriver.Mount', '/VolumeDriver.Unmount']);


function send(res: Response, status: number, body: unknown): void {
  // Exactly the type go-plugins-helpers sends (express's .type() would append a charset).
  res.status(status);
  res.setHeader('Content-Type', PLUGIN_CONTENT_TYPE);
  res.end(JSON.stringify(body));
}

function parseBody(raw: unknown): Record<string, unknown> {
  const buf = Buffer.isBuffer(raw) ? raw : Buffer.alloc(0);
  const text = buf.toString('utf8').trim();
  // Activate, List and Capabilities come with an empty body.
  if (text === '') return {};
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new TsfsError('request body is not valid JSON', 'bad-request');
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new TsfsError('request body must be a JSON object', 'bad-request');
  return v as Record<string, unknown>;
}

/** The body as `schema` types it, or a bad-request error listing what is wrong, in the schema's own words. */
function validate<S extends z.ZodType>(schema: S, body: Record<string, unknown>): z.output<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  throw new TsfsError(r.error.issues.map((i) => i.message).join('; '), 'bad-request');
}

export function makeApp(driver: VolumeDriver, log: Logger): express.Express {
  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.use(express.raw({ type: () => true, limit: MAX_BODY_BYTES }));

  // One log line per request, written when the answer is sent. Calls that
  // change state are info (failed: warn, the user saw an error); the reads
  // dockerd sends all the time (Get before every Create, List, Path) are
  // debug, also when they fail: "no such volume" on Get is normal traffic.
  app.use((req: Request, res: Response, next: NextFunction) => {
    const start = process.hrtime.bigint();
    res.on('finish', () => {
      const body = res.locals.body as Record<string, unknown> | undefined;
      const fields = {
        endpoint: req.path,
        ...(typeof body?.Name === 'string' && { volume: body.Name.slice(0, 255) }),
        ...(typeof body?.ID === 'string' && { mountId: body.ID.slice(0, 256) }),
        ms: Math.round(Number(process.hrtime.bigint() - start) / 1e5) / 10,
        outcome: res.statusCode < 400 ? 'ok' : 'error',
        status: res.statusCode,
        ...(res.locals.err !== undefined && { err: res.locals.err }),
        ...(res.locals.errCode !== undefined && { code: res.locals.errCode }),
      };
      if (!CHANGES_STATE.has(req.path)) log.debug(fields, res.statusCode < 400 ? 'request' : 'request failed');
      else if (res.statusCode < 400) log.info(fields, 'request');
      else log.warn(fields, 'request failed');
    });
    next();
  });

  // `signal` aborts when dockerd closes the request before the answer (it gave up waiting).
  const route = <S extends z.ZodType>(path: string, schema: S | undefined, handler: (body: z.output<S>, signal: AbortSignal) => Promise<unknown> | unknown) =>
    app.post(path, async (req: Request, res: Response) => {
      const gaveUp = new AbortController();
      res.on('close', () => {
        if (!res.writableEnded) gaveUp.abort();
      });
      try {
        const body = parseBody(req.body);
        res.locals.body = body;
        const out = await handler(schema ? validate(schema, body) : (undefined as z.output<S>), gaveUp.signal);
        send(res, 200, out ?? {});
      } catch (e) {
        const msg = (e as Error).message || String(e);
        res.locals.err = msg;
        res.locals.errCode = codeOf(e);
        send(res, 500, { Err: msg });
      }
    });

  // Nothing dockerd sends names the plugin, which is why hints say
  // `-d <driver>`: no field of the VolumeDriver protocol, and (seen in
  // dockerd 20.10's log) an empty Host and `User-Agent: Go-http-client/1.1`,
  // which are logged once at debug in case a later dockerd sends more.
  let seen = false;
  app.use((req: Request, _res: Response, next: NextFunction) => {
    if (!seen) {
      seen = true;
      log.debug({ host: req.headers.host, userAgent: req.headers['user-agent'] }, 'first request');
    }
    next();
  });
  route('/Plugin.Activate', undefined, () => ({ Implements: ['VolumeDriver'] }));
  route('/VolumeDriver.Create', CreateRequestSchema, (b) => driver.create(b));
  route('/VolumeDriver.Remove', NameRequestSchema, (b) => driver.remove(b));
  route('/VolumeDriver.Mount', MountRequestSchema, (b, signal) => driver.mount(b, signal));
  route('/VolumeDriver.Unmount', MountRequestSchema, (b) => driver.unmount(b));
  route('/VolumeDriver.Path', NameRequestSchema, (b) => driver.path(b));
  route('/VolumeDriver.Get', NameRequestSchema, (b) => driver.get(b));
  route('/VolumeDriver.List', undefined, () => driver.list());
  route('/VolumeDriver.Capabilities', undefined, () => driver.capabilities());

  app.use((req: Request, res: Response) => {
    res.locals.err = `unknown endpoint ${req.method} ${req.path}`;
    send(res, 404, { Err: `${res.locals.err}: this plugin implements Plugin.Activate and VolumeDriver.*` });
  });

  // Body-parser failures (too large, bad encoding) end up here.
  // eslint-disable-next-line @typescript-eslint/no-unused-vars
  app.use((err: Error & { type?: string }, _req: Request, res: Response, _next: NextFunction) => {
    const msg =
      err.type === 'entity.too.large'
        ? `request body larger than ${MAX_BODY_BYTES / 1024} KiB`
        : `cannot read request body: ${err.message}`;
    res.locals.err = msg;
    send(res, err.type === 'entity.too.large' ? 413 : 400, { Err: msg });
  });
  return app;
}
