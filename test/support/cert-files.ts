import { copyFileSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClientIdentity } from '../../dev/pki';
import type { World } from './agent-harness';

/**
 * The client certificate and key a test configures the agent with: copies of
 * the world's, in `dir` (made here), so the test can rotate them on disk.
 */
export function liveIdentity(world: World, dir: string): ClientIdentity {
  mkdirSync(dir);
  const live = { certPath: join(dir, 'client.crt'), keyPath: join(dir, 'client.key'), cn: world.pki.machineId };
  copyFileSync(world.pki.client.certPath, live.certPath);
  copyFileSync(world.pki.client.keyPath, live.keyPath);
  return live;
}

/** `path` becomes a copy of `from` by write tmp + rename, as a renewal job does: the file is always whole and gets a new inode. */
export function replaceFile(path: string, from: string): void {
  const tmp = `${path}.tmp`;
  writeFileSync(tmp, readFileSync(from), { mode: 0o600 });
  renameSync(tmp, path);
}
