// Reading a directory in fewer round trips than ssh2's readdir(path).
//
// ssh2 sends OPENDIR, then one READDIR at a time until EOF, then CLOSE, and
// answers only after the CLOSE. OpenSSH's sftp-server puts at most 100 names
// in one READDIR answer, so a directory of 100 files was five round trips in
// a row (OPENDIR, READDIR, READDIR, READDIR -> EOF, CLOSE), and `ls -lR` or a
// stat walk pays them per directory. Here:
//   - READDIRs on the handle go out READDIR_WINDOW at a time. sftp-server
//     answers them in order, each with the names after the last; a server
//     that ran them at once would still give each name once (a listing is a
//     set, and readdir(3) on one DIR hands each entry out once), so the
//     listing is complete when every READDIR sent has been answered and one
//     said EOF. Those sent after the last names come back as EOFs: a request
//     or two more per directory, against round trips saved (measured in
//     docs/performance.md, "Directory listings in fewer round trips").
//   - The CLOSE goes out after every READDIR has been answered (a threaded
//     server must not free the handle under one), and the listing does not
//     wait for it: a failed CLOSE of a directory changes nothing the caller
//     could act on.
import type { FileEntry, SFTPWrapper } from 'ssh2';

/** READDIRs in flight on one handle; 3 answer a 100-200-name directory from OpenSSH in one round trip. */
export const READDIR_WINDOW = 3;

const STATUS_EOF = 1;

/** The names of directory `path` (without `.` and `..`), as ssh2's readdir(path) returns them. */
export function listDirectory(s: SFTPWrapper, path: string, window = READDIR_WINDOW): Promise<FileEntry[]> {
  return new Promise((resolve, reject) => {
    const opened = (err: Error | undefined | null, handle: Buffer) => {
      if (err) return reject(err);
      const entries: FileEntry[] = [];
      let inFlight = 0;
      let eof = false;
      let failed: Error | undefined;
      const settle = () => {
        if (inFlight > 0) return;
        try {
          s.close(handle, () => undefined);
        } catch {
          // The channel is gone, and the handle with it.
        }
        if (failed) reject(failed);
        else resolve(entries);
      };
      const answered = (e: (Error & { code?: number }) | undefined | null, list?: FileEntry[]) => {
        inFlight--;
        if (e && e.code === STATUS_EOF) eof = true;
        else if (e) failed ??= e;
        else if (list) for (const entry of list) entries.push(entry);
        if (!eof && !failed) send();
        settle();
      };
      const send = () => {
        inFlight++;
        try {
          s.readdir(handle, answered);
        } catch (e) {
          // ssh2 throws when the channel has closed: the same as an error answer.
          inFlight--;
          failed ??= e as Error;
        }
      };
      for (let i = 0; i < window && !failed; i++) send();
      settle();
    };
    try {
      s.opendir(path, opened);
    } catch (e) {
      reject(e as Error);
    }
  });
}
