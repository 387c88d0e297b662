// The part of fuse-native 2.2.6 (as patched in patches/) that mount.ts uses.
declare module 'fuse-native' {
  interface FuseOpts {
    allowOther?: boolean;
    /** Per-op milliseconds, or false for none; `default` for the rest. */
    timeout?: number | false | Record<string, number | false>;
    /** Added by patches/fuse-native+2.2.6.patch: passed verbatim after -o. */
    extraOptions?: string[];
  }
  class Fuse {
    constructor(mnt: string, ops: Record<string, unknown>, opts?: FuseOpts);
    mount(cb: (err: Error | null) => void): void;
    unmount(cb: (err: Error | null) => void): void;
    static unmount(mnt: string, cb: (err: Error | null) => void): void;
    /** Added by the patch: the C attribute table getattr reads before calling JS. */
    attrCacheSet(path: string, stat: object, expiresAt: number): void;
    attrCacheDelete(path: string): void;
    attrCacheClear(): void;
  }
  export = Fuse;
}
