import { existsSync, mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { errnoText } from '../common/errno';
import { settingProblem } from './config.messages';

/**
 * Creates the state directory (0700: it will hold the event log) when
 * missing, and proves it writable. Returns a problem line, or null.
 */
export function prepareStateDir(path: string): string | null {
  const failed = makeDirs(path);
  if (failed) {
    const where = failed.dir === resolve(path) ? '' : ` (at ${failed.dir})`;
    return settingProblem('stateDir', `cannot create ${path}${where}: ${errnoText(failed.err)}`);
  }
  try {
    if (!statSync(path).isDirectory()) return settingProblem('stateDir', `${path} exists but is not a directory`);
    const probe = join(path, `.write-probe-${process.pid}`);
    writeFileSync(probe, '');
    rmSync(probe);
  } catch (err) {
    return settingProblem('stateDir', `${path} is not writable: ${errnoText(err)}`);
  }
  return null;
}

/**
 * One level at a time: Node's recursive mkdir turns every failure below an
 * existing parent (a read-only file system, a denied write) into ENOENT.
 */
function makeDirs(path: string): { dir: string; err: unknown } | null {
  const missing: string[] = [];
  for (let dir = resolve(path); !existsSync(dir); dir = dirname(dir)) {
    missing.unshift(dir);
    if (dirname(dir) === dir) break;
  }
  for (const dir of missing) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') return { dir, err };
    }
  }
  return null;
}
