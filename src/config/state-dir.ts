import { mkdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { errnoText } from './config.loader';
import { settingProblem } from './config.messages';

/**
 * Creates the state directory (0700: it will hold the event log) when
 * missing, and proves it writable. Returns a problem line, or null.
 */
export function prepareStateDir(path: string): string | null {
  try {
    mkdirSync(path, { recursive: true, mode: 0o700 });
  } catch (err) {
    return settingProblem('stateDir', `cannot create ${path}: ${errnoText(err)}`);
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
