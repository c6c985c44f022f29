import { closeSync, constants, ftruncateSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { flockSync } from 'fs-ext';
import { errnoText } from '../common/errno';
import { settingProblem } from '../config/config.messages';

// flock(2) rather than an O_EXCL lock file with a pid check: the kernel drops
// the lock when the process dies, however it dies, so a kill -9 never leaves a
// lock that blocks the restart, and no pid-reuse guess is needed. libuv opens
// every file O_CLOEXEC, so activation commands and systemd-run never inherit it.

export const LOCK_FILE_NAME = 'lock';

/** Held for the life of the process; the kernel releases it at exit. */
export interface StateDirLock {
  readonly path: string;
  /** Only for tests and for giving up before anything started. */
  release(): void;
}

export type StateDirLockResult =
  | { readonly kind: 'locked'; readonly lock: StateDirLock }
  /** `holderPid` is null when the holder has not written its pid yet (or is not an agent). */
  | { readonly kind: 'held'; readonly holderPid: number | null; readonly line: string }
  | { readonly kind: 'failed'; readonly line: string };

/**
 * Takes an exclusive, non-blocking flock on `<dir>/lock` and writes this
 * process's pid into it, so that a second agent can name the holder. The
 * file is never removed: unlinking a flock file lets two processes lock two
 * different inodes of the same name.
 */
export function lockStateDir(dir: string): StateDirLockResult {
  const path = join(dir, LOCK_FILE_NAME);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT, 0o600);
  } catch (err) {
    return { kind: 'failed', line: settingProblem('stateDir', `cannot open the lock file ${path}: ${errnoText(err)}`) };
  }
  try {
    flockSync(fd, 'exnb');
  } catch (err) {
    closeSync(fd);
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EAGAIN' || code === 'EWOULDBLOCK') {
      const holderPid = readHolderPid(path);
      return { kind: 'held', holderPid, line: heldLine(dir, path, holderPid) };
    }
    return { kind: 'failed', line: settingProblem('stateDir', `cannot lock ${path}: ${errnoText(err)}`) };
  }
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
  } catch (err) {
    closeSync(fd);
    return { kind: 'failed', line: settingProblem('stateDir', `cannot write this agent's pid into ${path}: ${errnoText(err)}`) };
  }
  let held = true;
  return {
    kind: 'locked',
    lock: {
      path,
      release() {
        if (!held) return;
        held = false;
        // Closing the only descriptor of the open file drops the flock.
        closeSync(fd);
      },
    },
  };
}

/** The holder writes its pid right after it locks: a second agent started at the same moment may look in between. */
const PID_READ_TRIES = 5;
const PID_READ_PAUSE_MS = 20;

function readHolderPid(path: string): number | null {
  for (let attempt = 1; ; attempt++) {
    try {
      const text = readFileSync(path, 'utf8').trim();
      if (/^[1-9]\d*$/.test(text)) return Number(text);
    } catch {
      // Unreadable: the line then names no pid.
    }
    if (attempt === PID_READ_TRIES) return null;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, PID_READ_PAUSE_MS);
  }
}

function heldLine(dir: string, path: string, pid: number | null): string {
  const holder = pid === null ? 'another process (no pid in the lock file)' : `another agent, pid ${pid}`;
  return settingProblem(
    'stateDir',
    `${dir} is in use by ${holder}, which holds ${path}; this agent did not start: stop that one first, or give this one a state dir of its own`,
  );
}
