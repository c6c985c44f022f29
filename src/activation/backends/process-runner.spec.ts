import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runProcess } from './process-runner';
import { processGone } from '../../../test/support/processes';
import { eventually } from '../../../test/support/polling';

describe('runProcess options', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-runner-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function script(name: string, body: string): string {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return path;
  }

  it('gives the child exactly the environment passed in `env`', async () => {
    // Node, not a shell: sh would add PWD of its own.
    const printEnv = 'for (const [k, v] of Object.entries(process.env)) console.error(`${k}=${v}`); process.exit(3)';
    const result = await runProcess([process.execPath, '-e', printEnv], { timeoutMs: 5000, env: { PATH: '/bin', ONLY: 'this' } });
    expect(result.exitCode).toBe(3);
    expect(result.stderrTail.split('\n').sort()).toEqual(['ONLY=this', 'PATH=/bin']);
  });

  it('kills the process group when the signal aborts and says it was aborted, not timed out', async () => {
    const pidFile = join(dir, 'sleeper.pid');
    const controller = new AbortController();
    const run = runProcess([script('sleepy', `sleep 30 &\necho $! > '${pidFile}'\nwait`)], {
      timeoutMs: 30_000,
      killGraceMs: 500,
      signal: controller.signal,
    });
    await eventually(() => readFileSync(pidFile, 'utf8').trim() !== '', 5_000, 'the child to write its pid');
    controller.abort();
    const result = await run;
    expect(result).toMatchObject({ aborted: true, timedOut: false, signal: 'SIGTERM', exitCode: null });
    expect(await processGone(Number(readFileSync(pidFile, 'utf8')))).toBe(true);
  });

  it('kills a group member that ignores SIGTERM at the timeout, even after the leader died of it', async () => {
    const pidFile = join(dir, 'stubborn.pid');
    // The leader dies on SIGTERM; the member it started ignores SIGTERM and holds stderr.
    const leader = script('leader', `/bin/sh -c "trap '' TERM; echo \\$\\$ > '${pidFile}'; exec sleep 30" &\nsleep 30`);
    const run = runProcess([leader], { timeoutMs: 300, killGraceMs: 300 });
    await eventually(() => readFileSync(pidFile, 'utf8').trim() !== '', 5_000, 'the member to write its pid');
    const result = await run;
    expect(result.timedOut).toBe(true);
    expect(await processGone(Number(readFileSync(pidFile, 'utf8')), 3_000)).toBe(true);
  });

  it('does not call a run that exited within its deadline timed out, though a grandchild holds its stderr past it', async () => {
    const result = await runProcess([script('quick', 'sleep 3 &\nexit 0')], { timeoutMs: 500, killGraceMs: 300 });
    expect(result).toMatchObject({ exitCode: 0, timedOut: false });
  });

  it('reaps what the run left in its process group when asked (reapGroup), and leaves it otherwise', async () => {
    const reaped = join(dir, 'reaped.pid');
    const left = join(dir, 'left.pid');
    const background = (pidFile: string): string =>
      script(`bg-${pidFile.length}`, `sleep 30 > /dev/null 2>&1 &\necho $! > '${pidFile}'\nexit 1`);
    expect((await runProcess([background(reaped)], { timeoutMs: 5000, reapGroup: true })).exitCode).toBe(1);
    expect(await processGone(Number(readFileSync(reaped, 'utf8')), 2_000)).toBe(true);

    expect((await runProcess([background(left)], { timeoutMs: 5000 })).exitCode).toBe(1);
    const pid = Number(readFileSync(left, 'utf8'));
    expect(await processGone(pid, 300)).toBe(false);
    process.kill(pid, 'SIGKILL');
  });

  it('does not start anything when the signal has already aborted', async () => {
    const marker = join(dir, 'ran');
    const controller = new AbortController();
    controller.abort();
    const result = await runProcess([script('touch', `echo > '${marker}'`)], { timeoutMs: 5000, signal: controller.signal });
    expect(result).toMatchObject({ aborted: true, exitCode: null, spawnError: null });
    expect(() => readFileSync(marker)).toThrow();
  });

  it('keeps the head of stdout up to stdoutMaxBytes when asked, and none otherwise', async () => {
    const talk = script('talk', 'echo first; echo second; echo third');
    expect((await runProcess([talk], { timeoutMs: 5000, stdoutMaxBytes: 12 })).stdout).toBe('first\nsecond');
    expect((await runProcess([talk], { timeoutMs: 5000 })).stdout).toBe('');
  });
});
