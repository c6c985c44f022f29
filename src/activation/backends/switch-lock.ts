import { closeSync, constants, openSync } from 'node:fs';
import { flockSync } from 'fs-ext';

/**
 * Whether another process holds an exclusive flock on `path` (NixOS's
 * switch-to-configuration does on its lock file while it runs). Tested with
 * a non-blocking lock of our own, dropped at once: only a switch starting in
 * that instant could see it. A file that is not there is not held; one the
 * agent cannot open or lock is reported as free, since the switch it guards
 * takes the lock itself anyway.
 */
export function switchLockHeld(path: string): boolean {
  let fd: number;
  try {
    // Read-only, never created: /run/nixos is NixOS's, and flock needs no write access.
    fd = openSync(path, constants.O_RDONLY);
  } catch {
    return false;
  }
  try {
    flockSync(fd, 'exnb');
    return false;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'EAGAIN' || code === 'EWOULDBLOCK';
  } finally {
    // Closing our only descriptor drops our lock, if we got it.
    closeSync(fd);
  }
}
