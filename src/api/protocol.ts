// The Docker volume plugin protocol, as plain types and one interface.
// https://docs.docker.com/engine/extend/plugins_volume/ and
// docker/go-plugins-helpers volume/api.go. dockerd POSTs a JSON body with no
// Content-Type and expects `application/vnd.docker.plugins.v1.1+json` back;
// every failure is `{"Err": "<message>"}` with HTTP 500, as go-plugins-helpers
// answers; dockerd shows Err to the user verbatim, so it must say what to do.
import { z } from 'zod';
import { MAX_VOLUME_NAME, VOLUME_NAME } from '../options';

// Requests are validated here, at the edge (server.ts parses every body with
// these schemas); the driver trusts the types. dockerd sends extra fields in
// some versions, so unknown keys are ignored, not refused.

/** Docker's own rule for volume names (daemon/names), bounded like a file name; also keeps <root>/<name> inside the root. */
const VolumeName = z.unknown().transform((name, ctx) => {
  if (typeof name !== 'string') {
    ctx.addIssue({ code: 'custom', message: 'Name must be a string' });
    return z.NEVER;
  }
  const shown = JSON.stringify(name.length > 64 ? name.slice(0, 64) + '...' : name);
  if (name.length > MAX_VOLUME_NAME) ctx.addIssue({ code: 'custom', message: `invalid volume name ${shown}: longer than ${MAX_VOLUME_NAME} characters` });
  else if (!VOLUME_NAME.test(name)) ctx.addIssue({ code: 'custom', message: `invalid volume name ${shown}: use 2 or more of [a-zA-Z0-9_.-], starting with a letter or digit` });
  return name;
});

const MAX_ID = 256;
const MountId = z.unknown().transform((id, ctx) => {
  if (typeof id !== 'string' || id === '') {
    ctx.addIssue({ code: 'custom', message: 'ID (the Docker mount ID) must be a non-empty string' });
    return z.NEVER;
  }
  // eslint-disable-next-line no-control-regex
  if (id.length > MAX_ID || /[\x00-\x1f\x7f]/.test(id)) ctx.addIssue({ code: 'custom', message: `ID must be at most ${MAX_ID} printable characters` });
  return id;
});

export const NameRequestSchema = z.object({ Name: VolumeName });
/** Opts is checked by parseOptions (src/options.ts), whose messages name the option at fault. */
export const CreateRequestSchema = z.object({ Name: VolumeName, Opts: z.unknown().optional() });
export const MountRequestSchema = z.object({ Name: VolumeName, ID: MountId });

export type CreateRequest = z.infer<typeof CreateRequestSchema>;
export type RemoveRequest = z.infer<typeof NameRequestSchema>;
export type MountRequest = z.infer<typeof MountRequestSchema>;
export type UnmountRequest = MountRequest;
export type PathRequest = RemoveRequest;
export type GetRequest = RemoveRequest;

export interface Volume {
  Name: string;
  Mountpoint?: string;
  /** RFC 3339. */
  CreatedAt?: string;
  Status?: Record<string, unknown>;
}

export interface MountResponse {
  Mountpoint: string;
}

export interface PathResponse {
  Mountpoint: string;
}

export interface GetResponse {
  Volume: Volume;
}

export interface ListResponse {
  Volumes: Volume[];
}

export interface CapabilitiesResponse {
  Capabilities: { Scope: 'local' | 'global' };
}

export interface ErrorResponse {
  Err: string;
}

/** What the HTTP layer calls. Each method throws an Error whose message is the user-facing Err. */
export interface VolumeDriver {
  create(req: CreateRequest): Promise<void>;
  remove(req: RemoveRequest): Promise<void>;
  /** `signal` aborts when dockerd stopped waiting for the answer: the mount must then not be kept. */
  mount(req: MountRequest, signal?: AbortSignal): Promise<MountResponse>;
  unmount(req: UnmountRequest): Promise<void>;
  path(req: PathRequest): Promise<PathResponse>;
  get(req: GetRequest): Promise<GetResponse>;
  list(): Promise<ListResponse>;
  capabilities(): CapabilitiesResponse;
}

export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.1+json';
