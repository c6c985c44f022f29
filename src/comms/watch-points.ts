import { lstatSync, readlinkSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';

/** Symlinks followed before giving up, as the kernel's own limit (ELOOP) would. */
const MAX_HOPS = 40;

/** Directory → the names in it whose change can mean a changed file. */
export type WatchPoints = Map<string, Set<string>>;

/**
 * Where a change to the files at `paths` shows up in some directory: each
 * file's own directory (a renewal replaces it by rename, a new inode in the
 * same place), and every symlink met on the way to it, in the path or in
 * what a link points to, with the directory it sits in: sops-nix and agenix
 * swap a symlinked secrets directory, NixOS swaps /etc/static, and the file
 * then changes without an event in its directory. Read now: a swap moves
 * the points, so callers compute them again after a change.
 */
export function watchPoints(paths: readonly string[]): WatchPoints {
  const points: WatchPoints = new Map();
  const add = (path: string): void => {
    const dir = dirname(path);
    const names = points.get(dir) ?? new Set<string>();
    names.add(basename(path));
    points.set(dir, names);
  };
  for (const path of paths) {
    let pending = resolve(path);
    add(pending);
    for (let hops = 0; hops < MAX_HOPS; hops++) {
      const link = firstSymlink(pending);
      if (link === null) break;
      add(link.at);
      pending = resolve(dirname(link.at), link.target, link.rest);
      add(pending);
    }
  }
  return points;
}

/** The first component of `path` that is a symlink, where it points and what follows it; null when there is none (or it cannot be read). */
function firstSymlink(path: string): { at: string; target: string; rest: string } | null {
  const parts = path.split('/').filter((p) => p !== '');
  let here = '/';
  for (const [i, part] of parts.entries()) {
    const next = join(here, part);
    try {
      if (lstatSync(next).isSymbolicLink()) return { at: next, target: readlinkSync(next), rest: parts.slice(i + 1).join('/') };
    } catch {
      // Missing or unreadable: what is watched so far is all there is to watch.
      return null;
    }
    here = next;
  }
  return null;
}
