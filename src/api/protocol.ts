// The Docker volume plugin protocol, as plain types and one interface.
// https://docs.docker.com/engine/extend/plugins_volume/ and
// docker/go-plugins-helpers volume/api.go. dockerd POSTs a JSON body with no
// Content-Type and expects `application/vnd.docker.plugins.v1.1+json` back;
// every failure is `{"Err": "<message>"}` with HTTP 500, as go-plugins-helpers
// answers; dockerd shows Err to the user verbatim, so it must say what to do.

export interface CreateRequest {
  Name: string;
  Opts?: Record<string, string>;
}

export interface RemoveRequest {
  Name: string;
}

export interface MountRequest {
  Name: string;
  ID: string;
}

export interface UnmountRequest {
  Name: string;
  ID: string;
}

export interface PathRequest {
  Name: string;
}

export interface GetRequest {
  Name: string;
}

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
  mount(req: MountRequest): Promise<MountResponse>;
  unmount(req: UnmountRequest): Promise<void>;
  path(req: PathRequest): Promise<PathResponse>;
  get(req: GetRequest): Promise<GetResponse>;
  list(): Promise<ListResponse>;
  capabilities(): CapabilitiesResponse;
}

export const PLUGIN_CONTENT_TYPE = 'application/vnd.docker.plugins.v1.1+json';
