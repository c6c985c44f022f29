import { type LogFile, type LogFs, nodeLogFs } from '../../src/outbound/log-fs';

/**
 * The real file operations of the event log, with faults a real disk will
 * not produce on cue (EIO, a write cut at a byte count, a failing rename)
 * switched on by a test. Everything not faulted goes to the disk.
 */
export class FaultyFs implements LogFs {
  /** The next writes may still put this many bytes on disk, then fail with ENOSPC. */
  enospcAfter: number | null = null;
  datasyncError: string | null = null;
  /** Appends whose bytes match fail with this errno (written nothing); null: no such fault. */
  appendError: { code: string; when: (data: Uint8Array) => boolean } | null = null;
  truncateError: string | null = null;
  renameError: string | null = null;
  datasyncs = 0;
  /** Delay of each write, to let concurrent callers pile up. */
  writeDelayMs = 0;
  writesInFlight = 0;
  maxWritesInFlight = 0;

  open = async (path: string): Promise<LogFile> => this.wrap(await nodeLogFs.open(path));
  create = async (path: string): Promise<LogFile> => this.wrap(await nodeLogFs.create(path));
  rename = async (from: string, to: string): Promise<void> => {
    if (this.renameError !== null) throw errno(this.renameError, 'rename');
    await nodeLogFs.rename(from, to);
  };
  syncDir = (dir: string): Promise<void> => nodeLogFs.syncDir(dir);
  unlink = (path: string): Promise<void> => nodeLogFs.unlink(path);
  mkdirp = (dir: string): Promise<void> => nodeLogFs.mkdirp(dir);

  private wrap(f: LogFile): LogFile {
    return {
      append: async (data) => {
        this.writesInFlight++;
        this.maxWritesInFlight = Math.max(this.maxWritesInFlight, this.writesInFlight);
        try {
          if (this.writeDelayMs > 0) await new Promise((r) => setTimeout(r, this.writeDelayMs));
          if (this.appendError?.when(data)) throw errno(this.appendError.code, 'write');
          if (this.enospcAfter === null) return await f.append(data);
          if (this.enospcAfter === 0) throw errno('ENOSPC', 'write');
          const n = await f.append(data.subarray(0, Math.min(data.length, this.enospcAfter)));
          this.enospcAfter -= n;
          return n;
        } finally {
          this.writesInFlight--;
        }
      },
      datasync: async () => {
        this.datasyncs++;
        if (this.datasyncError !== null) throw errno(this.datasyncError, 'fdatasync');
        await f.datasync();
      },
      sync: () => f.sync(),
      truncate: async (len) => {
        if (this.truncateError !== null) throw errno(this.truncateError, 'ftruncate');
        await f.truncate(len);
      },
      readAll: () => f.readAll(),
      close: () => f.close(),
    };
  }
}

export function errno(code: string, syscall: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: injected failure, ${syscall}`), { code, syscall });
}
