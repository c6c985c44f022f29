import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeClosure } from '../../../test/support/agent-harness';
import type { AgentConfig } from '../../config/config.loader';
import { CurrentSystemReader } from '../../recovery/current-system.reader';
import { STDERR_TAIL_BYTES } from '../activation.constants';
import type { ActivationOutcome } from '../activation.types';
import { CommandBackend } from './command.backend';
import { utf8Tail } from './process-runner';
import { processGone } from '../../../test/support/processes';

const OLD = fakeClosure('web-01-26.05', 'a');
const NEW = fakeClosure('web-01-26.11', 'b');

describe('CommandBackend', () => {
  let dir: string;
  let store: string;
  let link: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-command-'));
    store = join(dir, 'store');
    mkdirSync(join(store, OLD), { recursive: true });
    mkdirSync(join(store, NEW), { recursive: true });
    link = join(dir, 'current-system');
    symlinkSync(join(store, OLD), link);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** A real executable: `#!/bin/sh` and the body. */
  function script(name: string, body: string): string {
    const path = join(dir, name);
    writeFileSync(path, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return path;
  }

  function backend(command: string[], timeoutMs = 10_000): CommandBackend {
    const reader = new CurrentSystemReader({ currentSystemPath: link } as AgentConfig);
    return new CommandBackend({ storeDir: store, command, timeoutMs, killGraceMs: 500 }, reader);
  }

  async function activate(b: CommandBackend, closure = NEW): Promise<ActivationOutcome> {
    const plan = await b.plan(closure);
    expect(plan.switchMethod).toBe('command');
    return plan.run();
  }

  function failure(outcome: ActivationOutcome): { exitCode: number | null; stderrTail: string } {
    if (outcome.kind !== 'failed') throw new Error(`expected a failure, got ${JSON.stringify(outcome)}`);
    return outcome;
  }

  it('replaces every {closure} with the store path, runs argv without a shell, and reports the closure read back', async () => {
    const argvFile = join(dir, 'argv');
    const activateScript = script('activate', `printf '%s\\n' "$@" > '${argvFile}'\nln -sfn "$2" '${link}'`);
    const outcome = await activate(
      backend([activateScript, '--system', '{closure}', '--marker={closure}/bin:{closure}', 'plain $HOME;`x`']),
    );
    const storePath = join(store, NEW);
    expect(outcome).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
    expect(readFileSync(argvFile, 'utf8').split('\n').slice(0, -1)).toEqual([
      '--system',
      storePath,
      `--marker=${storePath}/bin:${storePath}`,
      'plain $HOME;`x`', // passed as is: no shell expanded it
    ]);
  });

  it('reports exit 75 (EX_TEMPFAIL) as deferred by "command"', async () => {
    const outcome = await activate(backend([script('activate', 'exit 75'), '{closure}']));
    expect(outcome).toEqual({ kind: 'deferred', component: 'command' });
  });

  it('reports any other exit as failed with the exit code and the stderr tail', async () => {
    const activateScript = script('activate', 'echo "building units" >&2\necho "error: unit foo.service failed" >&2\nexit 3');
    const { exitCode, stderrTail } = failure(await activate(backend([activateScript, '{closure}'])));
    expect(exitCode).toBe(3);
    expect(stderrTail).toMatch(/^activation command .*activate exited with code 3\n/);
    expect(stderrTail.endsWith('building units\nerror: unit foo.service failed')).toBe(true);
    expect(readlinkSync(link)).toBe(join(store, OLD));
  });

  it('keeps only the last 4 KiB of a long stderr, as valid UTF-8', async () => {
    const activateScript = script(
      'activate',
      'i=0\nwhile [ $i -lt 3000 ]; do echo "line $i: ünïcødé ✓ ✓ ✓" >&2; i=$((i+1)); done\necho "the last line" >&2\nexit 1',
    );
    const { exitCode, stderrTail } = failure(await activate(backend([activateScript, '{closure}'])));
    expect(exitCode).toBe(1);
    expect(Buffer.byteLength(stderrTail)).toBeLessThanOrEqual(STDERR_TAIL_BYTES);
    expect(Buffer.byteLength(stderrTail)).toBeGreaterThan(STDERR_TAIL_BYTES - 64);
    expect(stderrTail).toMatch(/^activation command .* exited with code 1\n/);
    expect(stderrTail.endsWith('line 2999: ünïcødé ✓ ✓ ✓\nthe last line')).toBe(true);
    expect(stderrTail).not.toContain('line 0:');
    expect(stderrTail).not.toContain('\uFFFD');
  });

  it('cuts a tail at a character boundary, never inside a UTF-8 sequence', () => {
    const bytes = Buffer.from('aé✓𝄞z'); // 1 + 2 + 3 + 4 + 1 bytes
    expect(utf8Tail(bytes, 5)).toBe('𝄞z');
    expect(utf8Tail(bytes, 4)).toBe('z'); // the clef's lead byte fell outside: the whole character goes
    expect(utf8Tail(bytes, 8)).toBe('✓𝄞z');
    expect(utf8Tail(Buffer.from('  padded \n'), 100)).toBe('padded');
  });

  it('fails without running anything when the store path does not exist', async () => {
    const marker = join(dir, 'ran');
    const missing = fakeClosure('web-01-27.05', 'c');
    const { exitCode, stderrTail } = failure(await activate(backend([script('activate', `touch '${marker}'`), '{closure}']), missing));
    expect(exitCode).toBeNull();
    expect(stderrTail).toContain(join(store, missing));
    expect(stderrTail).toMatch(/does not exist; the closure must be built or copied to this host/);
    expect(existsSync(marker)).toBe(false);
  });

  it.each(['../escape', 'x/y', '..'])('refuses %j, which is not a store basename', async (closure) => {
    mkdirSync(join(dir, 'escape'), { recursive: true }); // would exist, relative to the store
    const marker = join(dir, 'ran');
    const { exitCode, stderrTail } = failure(await activate(backend([script('activate', `touch '${marker}'`), '{closure}']), closure));
    expect(exitCode).toBeNull();
    expect(stderrTail).toMatch(/not a store path basename/);
    expect(existsSync(marker)).toBe(false);
  });

  it('fails with a null exit code and names the signal when the command is killed by one', async () => {
    const { exitCode, stderrTail } = failure(await activate(backend([script('activate', 'kill -KILL $$'), '{closure}'])));
    expect(exitCode).toBeNull();
    expect(stderrTail).toMatch(/was killed by SIGKILL/);
  });

  it('fails with a null exit code when the program cannot be started', async () => {
    const { exitCode, stderrTail } = failure(await activate(backend([join(dir, 'no-such-program'), '{closure}'])));
    expect(exitCode).toBeNull();
    expect(stderrTail).toMatch(/could not be started \(ENOENT/);
  });

  it('kills a command, and what it started, once the timeout passes, and fails', async () => {
    const pidFile = join(dir, 'sleeper.pid');
    const activateScript = script('activate', `echo "waiting for the lock" >&2\nsleep 30 &\necho $! > '${pidFile}'\nwait`);
    const { exitCode, stderrTail } = failure(await activate(backend([activateScript, '{closure}'], 300)));
    expect(exitCode).toBeNull();
    expect(stderrTail).toMatch(/timed out after 300 ms and was killed by SIGTERM\nwaiting for the lock$/);
    const sleeper = Number(readFileSync(pidFile, 'utf8'));
    expect(await processGone(sleeper)).toBe(true);
  });

  it('settles on the exit status when a background grandchild keeps stderr open', async () => {
    const pidFile = join(dir, 'lingerer.pid');
    const activateScript = script('activate', `sleep 30 &\necho $! > '${pidFile}'\nln -sfn "$1" '${link}'\nexit 0`);
    try {
      const outcome = await activate(backend([activateScript, '{closure}']));
      expect(outcome).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
    } finally {
      process.kill(Number(readFileSync(pidFile, 'utf8')), 'SIGKILL');
    }
  });
});
