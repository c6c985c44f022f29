import { constants } from 'node:fs';
import { mkdir, open, rename, unlink, type FileHandle } from 'node:fs/promises';

/**
 * The few file operations the event log performs, behind an interface so a
 * test can inject a fault (a full disk after N bytes, a failing fdatasync)
 * without mocking `fs`.
 */
export interface LogFile {
  /** One write at the end of the file; may write fewer bytes than given (a full disk), so callers loop. */
  append(data: Uint8Array): Promise<number>;
  /** fdatasync: the data and the size, not every inode field. */
  datasync(): Promise<void>;
  /** fsync. */
  sync(): Promise<void>;
  truncate(length: number): Promise<void>;
  /** The whole file, from offset 0. */
  readAll(): Promise<Buffer>;
  close(): Promise<void>;
}

export interface LogFs {
  /** Read-write, created when missing, never truncated. */
  open(path: string): Promise<LogFile>;
  /** Read-write, created or emptied: the compaction's tmp file. */
  create(path: string): Promise<LogFile>;
  rename(from: string, to: string): Promise<void>;
  /** fsync of a directory, so that a create or a rename in it survives a power loss. */
  syncDir(dir: string): Promise<void>;
  /** Removes a file; a missing one is not an error. */
  unlink(path: string): Promise<void>;
  mkdirp(dir: string): Promise<void>;
}

class NodeLogFile implements LogFile {
  constructor(private readonly fh: FileHandle) {}

  async append(data: Uint8Array): Promise<number> {
    // No position: with O_APPEND the kernel picks the end at each write(2).
    const { bytesWritten } = await this.fh.write(data, 0, data.length, null);
    return bytesWritten;
  }

  datasync(): Promise<void> {
    return this.fh.datasync();
  }

  sync(): Promise<void> {
    return this.fh.sync();
  }

  truncate(length: number): Promise<void> {
    return this.fh.truncate(length);
  }

  async readAll(): Promise<Buffer> {
    const { size } = await this.fh.stat();
    const buf = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const { bytesRead } = await this.fh.read(buf, done, size - done, done);
      if (bytesRead === 0) break;
      done += bytesRead;
    }
    return done === size ? buf : buf.subarray(0, done);
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

// O_APPEND: every write lands at the file's current end, never at a remembered
// offset that another writer has since written past, so no record is ever
// overwritten. A failed batch is still cut back by ftruncate to the size before it.
const APPEND = constants.O_RDWR | constants.O_CREAT | constants.O_APPEND;

/** The real file system. */
export const nodeLogFs: LogFs = {
  open: async (path) => new NodeLogFile(await open(path, APPEND, 0o600)),
  // The compacted file becomes the log after its rename, so it is opened for appends too.
  create: async (path) => new NodeLogFile(await open(path, APPEND | constants.O_TRUNC, 0o600)),
  rename: (from, to) => rename(from, to),
  syncDir: async (dir) => {
    const fh = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  },
  unlink: async (path) => {
    try {
      await unlink(path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
  },
  mkdirp: async (dir) => {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  },
};

/** Writes all of `data` at the end of `file`, looping over short writes. */
export async function appendFully(file: LogFile, data: Buffer): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const n = await file.append(data.subarray(done));
    // A zero-byte write would loop for ever; a real full disk throws ENOSPC instead.
    if (n <= 0) throw Object.assign(new Error('write made no progress'), { code: 'EIO' });
    done += n;
  }
}
