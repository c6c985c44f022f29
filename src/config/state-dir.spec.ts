import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { prepareStateDir } from './state-dir';

const WHERE = '--state-dir (env NIXFLEET_AGENT_STATE_DIR, file key "stateDir")';

describe('prepareStateDir', () => {
  let root: string;

  beforeEach(() => {
    root = mkdtempSync(join(tmpdir(), 'nfa-state-dir-'));
  });
  afterEach(() => rmSync(root, { recursive: true, force: true }));

  it('creates a missing dir and its missing parents 0700, and leaves nothing in it', () => {
    const dir = join(root, 'a', 'b', 'state');
    expect(prepareStateDir(dir)).toBeNull();
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    expect(statSync(join(root, 'a')).mode & 0o777).toBe(0o700);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('takes an existing writable dir as it is', () => {
    const dir = join(root, 'state');
    mkdirSync(dir, { mode: 0o755 });
    expect(prepareStateDir(dir)).toBeNull();
    expect(statSync(dir).mode & 0o777).toBe(0o755);
  });

  it('refuses a path below a regular file, naming the setting and the dir', () => {
    writeFileSync(join(root, 'afile'), 'x');
    const dir = join(root, 'afile', 'state');
    expect(prepareStateDir(dir)).toBe(`config error: ${WHERE}: cannot create ${dir}: a part of the path is not a directory`);
  });

  it('refuses a path that is a file', () => {
    const dir = join(root, 'afile');
    writeFileSync(dir, 'x');
    expect(prepareStateDir(dir)).toBe(`config error: ${WHERE}: ${dir} exists but is not a directory`);
  });

  // The project's machines and CI run as root, which no file mode stops: a read-only mount does.
  describe('on a read-only file system (a tmpfs mounted ro, root only)', () => {
    let mnt: string;
    beforeEach(() => {
      mnt = join(root, 'ro');
      mkdirSync(mnt);
      const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', mnt]);
      if (mounted.status !== 0) throw new Error(`cannot mount a tmpfs at ${mnt} (needs root): ${mounted.stderr.toString()}`);
      mkdirSync(join(mnt, 'state'));
      const ro = spawnSync('mount', ['-o', 'remount,ro', mnt]);
      if (ro.status !== 0) throw new Error(`cannot remount ${mnt} read-only: ${ro.stderr.toString()}`);
    });
    afterEach(() => {
      spawnSync('umount', [mnt]);
    });

    it('says an existing dir is not writable, and why', () => {
      const dir = join(mnt, 'state');
      expect(prepareStateDir(dir)).toBe(`config error: ${WHERE}: ${dir} is not writable: read-only file system`);
    });

    it('says the real cause of a failed create (not the ENOENT of a recursive mkdir), and where it failed', () => {
      const dir = join(mnt, 'new', 'state');
      expect(prepareStateDir(dir)).toBe(`config error: ${WHERE}: cannot create ${dir} (at ${join(mnt, 'new')}): read-only file system`);
    });
  });
});
