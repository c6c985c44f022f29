import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LOCK_FILE_NAME, lockStateDir, type StateDirLock, type StateDirLockResult } from './state-dir-lock';

/** O_CLOEXEC in /proc/<pid>/fdinfo's octal `flags` (Linux). */
const O_CLOEXEC = 0o2000000;

// Another process holding the flock as an agent does: flock, then its pid in the file.
const HOLDER = `
const fs = require('node:fs');
const { flockSync } = require('fs-ext');
const fd = fs.openSync(process.argv[1], 'r+');
flockSync(fd, 'exnb');
fs.ftruncateSync(fd, 0);
fs.writeSync(fd, process.pid + '\\n', 0);
process.stdout.write('locked\\n');
setInterval(() => {}, 1000);
`;

function locked(result: StateDirLockResult): StateDirLock {
  if (result.kind !== 'locked') throw new Error(`expected the lock, got ${JSON.stringify(result)}`);
  return result.lock;
}

describe('lockStateDir', () => {
  let dir: string;
  const held: StateDirLock[] = [];
  let holder: ChildProcess | null = null;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-lock-'));
  });
  afterEach(async () => {
    for (const lock of held.splice(0)) lock.release();
    if (holder && holder.exitCode === null && holder.signalCode === null) {
      const gone = new Promise((resolve) => holder?.once('exit', resolve));
      holder.kill('SIGKILL');
      await gone;
    }
    holder = null;
    rmSync(dir, { recursive: true, force: true });
  });

  /** A real second process that takes the lock; resolves once it holds it. */
  async function startHolder(): Promise<ChildProcess> {
    writeFileSync(join(dir, LOCK_FILE_NAME), '', { flag: 'a' });
    const child = spawn(process.execPath, ['-e', HOLDER, join(dir, LOCK_FILE_NAME)], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    holder = child;
    let err = '';
    child.stderr?.on('data', (c: Buffer) => (err += c.toString()));
    await new Promise<void>((resolve, reject) => {
      child.stdout?.on('data', (c: Buffer) => {
        if (c.toString().includes('locked')) resolve();
      });
      child.once('exit', (code) => reject(new Error(`holder exited ${code}: ${err}`)));
    });
    return child;
  }

  it('takes the lock and writes its pid into <dir>/lock', () => {
    const lock = locked(lockStateDir(dir));
    held.push(lock);
    expect(lock.path).toBe(join(dir, 'lock'));
    expect(readFileSync(lock.path, 'utf8')).toBe(`${process.pid}\n`);
  });

  it('refuses a second lock on the same dir with one line naming the dir, the holder pid, the setting and what to do', () => {
    held.push(locked(lockStateDir(dir)));
    const second = lockStateDir(dir);
    expect(second).toEqual({ kind: 'held', holderPid: process.pid, line: expect.any(String) });
    const line = (second as { line: string }).line;
    expect(line.split('\n')).toHaveLength(1);
    expect(line).toBe(
      `config error: --state-dir (env NIXFLEET_AGENT_STATE_DIR, file key "stateDir"): ${dir} is in use by another agent, pid ${process.pid}, which holds ${join(dir, 'lock')}; this agent did not start: stop that one first, or give this one a state dir of its own`,
    );
    // The refused attempt left the holder's pid in place.
    expect(readFileSync(join(dir, 'lock'), 'utf8')).toBe(`${process.pid}\n`);
  });

  it('can be taken again once released', () => {
    locked(lockStateDir(dir)).release();
    held.push(locked(lockStateDir(dir)));
  });

  it('is not blocked by a lock file a dead agent left behind', () => {
    writeFileSync(join(dir, 'lock'), '999999\n');
    held.push(locked(lockStateDir(dir)));
    expect(readFileSync(join(dir, 'lock'), 'utf8')).toBe(`${process.pid}\n`);
  });

  it('is refused while another process holds it, and free the moment that process is SIGKILLed', async () => {
    const child = await startHolder();
    const refused = lockStateDir(dir);
    expect(refused).toMatchObject({ kind: 'held', holderPid: child.pid });
    expect((refused as { line: string }).line).toContain(`in use by another agent, pid ${child.pid}`);

    const gone = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await gone;
    held.push(locked(lockStateDir(dir)));
  });

  it('names no pid when the holder has not written one', () => {
    held.push(locked(lockStateDir(dir)));
    writeFileSync(join(dir, 'lock'), '');
    const second = lockStateDir(dir);
    expect(second).toMatchObject({ kind: 'held', holderPid: null });
    expect((second as { line: string }).line).toContain('in use by another process (no pid in the lock file)');
  });

  it('is opened close-on-exec, so a child process (an activation command) never holds it', () => {
    const lock = locked(lockStateDir(dir));
    held.push(lock);
    const fds = readdirSync('/proc/self/fd').filter((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`) === lock.path;
      } catch {
        return false;
      }
    });
    expect(fds).toHaveLength(1);
    const flags = /^flags:\s+([0-7]+)$/m.exec(readFileSync(`/proc/self/fdinfo/${fds[0]}`, 'utf8'))?.[1];
    expect(Number.parseInt(flags ?? '0', 8) & O_CLOEXEC).toBe(O_CLOEXEC);

    const child = spawnSync('/bin/sh', ['-c', 'for f in /proc/$$/fd/*; do readlink "$f" || :; done'], { encoding: 'utf8' });
    expect(child.status).toBe(0);
    expect(child.stdout.split('\n')).not.toContain(lock.path);
  });

  it('fails with a line naming the setting and the errno when the lock file cannot be opened', () => {
    mkdirSync(join(dir, 'lock'));
    const result = lockStateDir(dir);
    expect(result).toEqual({
      kind: 'failed',
      line: `config error: --state-dir (env NIXFLEET_AGENT_STATE_DIR, file key "stateDir"): cannot open the lock file ${join(dir, 'lock')}: it is a directory`,
    });
  });
});
