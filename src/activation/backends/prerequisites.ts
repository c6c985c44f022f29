import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { errnoText } from '../../common/errno';

/**
 * Where `program` would be run from, found as execvp(3) finds it: a name
 * with a slash is taken as a path, a bare name is looked up in each PATH
 * entry in turn. Returns why it cannot run, or null when it can.
 */
export async function missingExecutable(program: string, searchPath: string, role: string): Promise<string | null> {
  if (program.includes('/')) {
    const why = await notExecutable(program);
    return why === null ? null : `${program} (${role}) ${why}`;
  }
  // An empty PATH entry means the working directory: never a place a daemon's tools are meant to come from.
  const dirs = searchPath.split(delimiter).filter((d) => d !== '');
  for (const dir of dirs) {
    if ((await notExecutable(join(dir, program))) === null) return null;
  }
  return `${program} (${role}) is not found on PATH (${dirs.length === 0 ? 'PATH is empty' : dirs.join(delimiter)})`;
}

/** Why `path` is not a directory the agent can read, or null when it is one. */
export async function missingDirectory(path: string, what: string): Promise<string | null> {
  try {
    const s = await stat(path);
    if (!s.isDirectory()) return `${what} ${path} is not a directory`;
    await access(path, constants.R_OK | constants.X_OK);
    return null;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ENOENT'
      ? `${what} ${path} does not exist`
      : `${what} ${path} is not usable (${errnoText(err)})`;
  }
}

async function notExecutable(path: string): Promise<string | null> {
  try {
    const s = await stat(path);
    if (!s.isFile()) return 'is not a file';
    await access(path, constants.X_OK);
    return null;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return 'does not exist';
    if (code === 'EACCES') return 'is not executable';
    return `is not usable (${errnoText(err)})`;
  }
}
