// The part of this package's interface that tsfs uses (src/fs/mount.ts).
declare namespace Fuse {
  interface FuseOpts {
    allowOther?: boolean;
    /** Per-op milliseconds, or false for none; `default` for the rest. */
    timeout?: number | false | Record<string, number | false>;
    /** Passed verbatim after -o (this copy's addition). */
    extraOptions?: string[];
  }
}
declare class Fuse {
  constructor(mnt: string, ops: Record<string, unknown>, opts?: Fuse.FuseOpts);
  mount(cb: (err: Error | null) => void): void;
  unmount(cb: (err: Error | null) => void): void;
  static unmount(mnt: string, cb: (err: Error | null) => void): void;
  /** The C attribute table getattr reads before calling JS (this copy's addition). */
  attrCacheSet(path: string, stat: object, expiresAt: number): void;
  attrCacheDelete(path: string): void;
  attrCacheClear(): void;
}
export = Fuse;
