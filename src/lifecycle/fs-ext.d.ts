// The part of fs-ext 2.1.1 (native flock(2)) that the agent uses; its published types cover all of `fs` besides.
declare module 'fs-ext' {
  /** Throws an Error with `code` set to the errno name (`EAGAIN` when a non-blocking lock is held elsewhere). */
  export function flockSync(fd: number, flags: 'sh' | 'ex' | 'shnb' | 'exnb' | 'un'): void;
}
