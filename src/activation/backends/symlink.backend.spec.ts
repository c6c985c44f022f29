import { mkdtempSync, readdirSync, readlinkSync, rmSync, symlinkSync } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fakeClosure } from '../../../test/support/agent-harness';
import type { AgentConfig } from '../../config/config.loader';
import { CurrentSystemReader } from '../../recovery/current-system.reader';
import { SymlinkBackend } from './symlink.backend';

const OLD = fakeClosure('web-01-26.05', 'a');
const NEW = fakeClosure('web-01-26.11', 'b');
const STORE = '/nix/store';

describe('SymlinkBackend', () => {
  let dir: string;
  let link: string;
  let backend: SymlinkBackend;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-symlink-'));
    link = join(dir, 'current-system');
    symlinkSync(`${STORE}/${OLD}`, link);
    backend = backendFor(link);
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function backendFor(currentSystemPath: string): SymlinkBackend {
    const reader = new CurrentSystemReader({ currentSystemPath } as AgentConfig);
    return new SymlinkBackend({ storeDir: STORE, currentSystemPath }, reader);
  }

  it('re-points the link at <storeDir>/<closure> and reports completed with the closure read back', async () => {
    const plan = await backend.plan(NEW);
    expect(plan.switchMethod).toBe('symlink');
    // The store path need not exist: the demo's closures are names only.
    expect(await plan.run()).toEqual({ kind: 'completed', observedCurrentClosure: NEW, exitCode: 0 });
    expect(readlinkSync(link)).toBe(`${STORE}/${NEW}`);
    expect(readdirSync(dir)).toEqual(['current-system']); // no temp link left behind
  });

  it('never leaves a moment without the link: a concurrent reader sees no ENOENT across many re-points', async () => {
    let done = false;
    let reads = 0;
    const missing: string[] = [];
    const seen = new Set<string>();
    const readLoop = async (): Promise<void> => {
      while (!done) {
        try {
          seen.add(await readlink(link));
          reads += 1;
        } catch (err) {
          missing.push((err as NodeJS.ErrnoException).code ?? String(err));
        }
      }
    };
    // Several readers in flight at once on the libuv pool, racing the renames.
    const readers = [readLoop(), readLoop(), readLoop()];
    for (let i = 0; i < 300; i += 1) {
      const plan = await backend.plan(i % 2 === 0 ? NEW : OLD);
      expect((await plan.run()).kind).toBe('completed');
    }
    done = true;
    await Promise.all(readers);
    expect(missing).toEqual([]);
    expect(reads).toBeGreaterThan(0);
    expect([...seen].every((t) => t === `${STORE}/${NEW}` || t === `${STORE}/${OLD}`)).toBe(true);
    expect(readlinkSync(link)).toBe(`${STORE}/${OLD}`);
    expect(readdirSync(dir)).toEqual(['current-system']);
  });

  it.each(['../etc', 'a/b', '.', '..', ''])('refuses %j, which is not a store basename, and leaves the link alone', async (closure) => {
    const plan = await backend.plan(closure);
    expect(plan.switchMethod).toBe('symlink');
    const outcome = await plan.run();
    expect(outcome).toMatchObject({ kind: 'failed', exitCode: null });
    expect(outcome.kind === 'failed' && outcome.stderrTail).toMatch(/not a store path basename/);
    expect(readlinkSync(link)).toBe(`${STORE}/${OLD}`);
  });

  it('fails, without throwing, when the link cannot be placed', async () => {
    const outcome = await (await backendFor(join(dir, 'no-such-dir', 'current-system')).plan(NEW)).run();
    expect(outcome).toMatchObject({ kind: 'failed', exitCode: null });
    expect(outcome.kind === 'failed' && outcome.stderrTail).toMatch(/cannot point .*no-such-dir.* no such file/);
  });
});
