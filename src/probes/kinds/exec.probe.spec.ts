import { getEventListeners } from 'node:events';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { reasonLength } from '../failure-reason';
import { MAX_FAILURE_REASON_CHARS, type ExecProbeSpec } from '../probe.types';
import { EXEC_PROBE_ENV, runExecProbe } from './exec.probe';
import { processGone } from '../../../test/support/processes';
import { eventually } from '../../../test/support/polling';

describe('runExecProbe', () => {
  let dir: string;
  const signal = new AbortController().signal;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-exec-probe-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A real executable: `#!/bin/sh` and the body. */
  function script(name: string, body: string): string {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return path;
  }

  function spec(command: string[], timeoutMs = 5_000): ExecProbeSpec {
    return { kind: 'exec', command, timeoutMs };
  }

  it('passes on exit 0', async () => {
    expect(await runExecProbe(spec([script('ok', 'exit 0')]), signal)).toEqual({ status: 'pass', durationMs: expect.any(Number) });
  });

  it('runs argv without a shell: arguments reach the program as they are', async () => {
    const out = join(dir, 'args');
    const echo = script('args', `printf '%s\\n' "$@" > '${out}'`);
    expect(await runExecProbe(spec([echo, '$HOME', 'a b', '`id`']), signal)).toMatchObject({ status: 'pass' });
    expect(readFileSync(out, 'utf8')).toBe('$HOME\na b\n`id`\n');
  });

  it('fails on exit 1 with how it ended and the last 3 non-empty stderr lines only', async () => {
    const check = script(
      'check',
      'for i in 1 2 3; do echo "line $i" >&2; done; echo >&2; echo "line 4" >&2; echo "   " >&2; echo "line 5" >&2; exit 1',
    );
    expect(await runExecProbe(spec([check]), signal)).toEqual({
      status: 'fail',
      failureReason: `${check} exited with code 1\nline 3\nline 4\nline 5`,
      durationMs: expect.any(Number),
    });
  });

  it('runs with a clean environment: only PATH', async () => {
    // Node, not a shell: sh would add PWD of its own.
    const printEnv = 'for (const [k, v] of Object.entries(process.env)) console.error(`${k}=${v}`); process.exit(1)';
    process.env.NFA_PROBE_SECRET = 'must not leak';
    try {
      const outcome = await runExecProbe(spec([process.execPath, '-e', printEnv]), signal);
      expect(outcome.failureReason).toBe(`${process.execPath} exited with code 1\nPATH=${EXEC_PROBE_ENV.PATH}`);
    } finally {
      delete process.env.NFA_PROBE_SECRET;
    }
  });

  it('kills the command and what it started at the timeout, and fails saying so', async () => {
    const pidFile = join(dir, 'sleeper.pid');
    const slow = script('slow', `echo "waiting for the database" >&2\nsleep 30 &\necho $! > '${pidFile}'\nwait`);
    const outcome = await runExecProbe(spec([slow], 300), signal, { killGraceMs: 200 });
    expect(outcome.failureReason).toBe(`${slow} timed out after 300 ms and was killed by SIGTERM\nwaiting for the database`);
    expect(outcome.durationMs).toBeGreaterThanOrEqual(290);
    expect(outcome.durationMs).toBeLessThan(5_000);
    expect(await processGone(Number(readFileSync(pidFile, 'utf8')), 2000)).toBe(true);
  });

  it('kills with SIGKILL after the grace a command that ignores SIGTERM', async () => {
    const stubborn = script('stubborn', "trap '' TERM\nsleep 30");
    const outcome = await runExecProbe(spec([stubborn], 300), signal, { killGraceMs: 200 });
    expect(outcome.failureReason).toBe(`${stubborn} timed out after 300 ms and was killed by SIGKILL`);
  });

  it('names the signal that killed a command', async () => {
    const killed = script('killed', 'kill -KILL $$');
    expect((await runExecProbe(spec([killed]), signal)).failureReason).toBe(`${killed} was killed by SIGKILL`);
  });

  it('fails when the program cannot be started', async () => {
    const missing = join(dir, 'no-such-program');
    expect((await runExecProbe(spec([missing]), signal)).failureReason).toBe(
      `${missing} could not be started (ENOENT: spawn ${missing} ENOENT)`,
    );
  });

  it('fails when the program is not executable', async () => {
    const plain = join(dir, 'plain');
    writeFileSync(plain, 'exit 0\n', { mode: 0o644 });
    expect((await runExecProbe(spec([plain]), signal)).failureReason).toMatch(new RegExp(`^${plain} could not be started \\(EACCES`));
  });

  it('caps a long reason at 512 characters, keeping how it ended and the end of the last stderr line', async () => {
    const stderr = join(dir, 'stderr.txt');
    writeFileSync(stderr, `first\n${'é'.repeat(700)} 🦀 the last words\n`);
    const noisy = script('noisy', `cat '${stderr}' >&2; exit 2`);
    const outcome = await runExecProbe(spec([noisy]), signal);
    expect(reasonLength(outcome.failureReason ?? '')).toBe(MAX_FAILURE_REASON_CHARS);
    expect(outcome.failureReason).toMatch(new RegExp(`^${noisy} exited with code 2\\n…é+ 🦀 the last words$`));
  });

  it('resolves promptly as cancelled when its signal aborts, and kills the group in the background', async () => {
    const pidFile = join(dir, 'sleeper.pid');
    const slow = script('slow', `trap '' TERM\nsleep 30 &\necho $! > '${pidFile}'\nwait`);
    const controller = new AbortController();
    const running = runExecProbe(spec([slow], 60_000), controller.signal, { killGraceMs: 300 });
    await eventually(() => readFileSync(pidFile, 'utf8').trim() !== '', 5_000, 'the child to write its pid');
    controller.abort();
    const outcome = await running;
    expect(outcome).toMatchObject({ status: 'fail', failureReason: 'cancelled' });
    expect(outcome.durationMs).toBeLessThan(5_000);
    expect(await processGone(Number(readFileSync(pidFile, 'utf8')), 2000)).toBe(true);
  });

  it('leaves nothing running behind it: what the check started in the background goes with it', async () => {
    const pidFile = join(dir, 'background.pid');
    const leaky = script('leaky', `sleep 30 > /dev/null 2>&1 &\necho $! > '${pidFile}'\nexit 1`);
    expect((await runExecProbe(spec([leaky]), signal)).status).toBe('fail');
    expect(await processGone(Number(readFileSync(pidFile, 'utf8')), 2_000)).toBe(true);
  });

  it("leaves no listener on the runner's signal, which outlives every run", async () => {
    const controller = new AbortController();
    await runExecProbe(spec([script('ok', 'exit 0')]), controller.signal);
    await runExecProbe(spec([script('bad', 'exit 3')]), controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });
});
