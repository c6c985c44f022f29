// The part of unix-dgram 2.0.7 (no published types) that the agent and its tests use.
declare module 'unix-dgram' {
  import type { EventEmitter } from 'node:events';

  /** `code` is a negative errno (e.g. -111) for system errors, 1 for congestion. */
  export type UnixDgramError = Error & { code?: number | string };

  export interface UnixDgramSocket extends EventEmitter {
    /** Synchronous: the callback runs before send() returns. */
    send(buf: Buffer, offset: number, length: number, path: string, callback?: (err?: UnixDgramError) => void): void;
    /** Emits 'listening' or 'error', synchronously. */
    bind(path: string): void;
    close(): void;
  }

  export function createSocket(type: 'unix_dgram', listener?: (msg: Buffer) => void): UnixDgramSocket;
}
