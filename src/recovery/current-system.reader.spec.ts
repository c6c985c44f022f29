import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Test } from '@nestjs/testing';
import { CapturingLogger } from '../../test/support/agent-harness';
import type { AgentConfig } from '../config/config.loader';
import { AGENT_CONFIG } from '../config/config.constants';
import { CurrentSystemReader } from './current-system.reader';

const CLOSURE = 'abcdefghijklmnopqrstuvwxyz012345-nixos-system-web-01-26.05';

describe('CurrentSystemReader', () => {
  let dir: string;
  let logs: CapturingLogger;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-current-'));
    logs = new CapturingLogger();
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function readerFor(currentSystemPath: string): Promise<CurrentSystemReader> {
    const module = await Test.createTestingModule({
      providers: [CurrentSystemReader, { provide: AGENT_CONFIG, useValue: { currentSystemPath } as AgentConfig }],
    })
      .setLogger(logs)
      .compile();
    return module.get(CurrentSystemReader);
  }

  const warnings = (): string[] => logs.messages('warn', CurrentSystemReader.name);

  it('reads the basename of an absolute /nix/store target', async () => {
    const link = join(dir, 'current-system');
    symlinkSync(`/nix/store/${CLOSURE}`, link);
    expect(await (await readerFor(link)).read()).toBe(CLOSURE);
  });

  it('reads the basename of a relative target, without following it', async () => {
    const link = join(dir, 'current-system');
    symlinkSync(`../nix/store/${CLOSURE}`, link);
    expect(await (await readerFor(link)).read()).toBe(CLOSURE);
  });

  it('ignores a trailing slash on the target', async () => {
    const link = join(dir, 'current-system');
    symlinkSync(`/nix/store/${CLOSURE}/`, link);
    expect(await (await readerFor(link)).read()).toBe(CLOSURE);
  });

  it('reads afresh on every call: a re-pointed link gives the new closure', async () => {
    const link = join(dir, 'current-system');
    symlinkSync(`/nix/store/${CLOSURE}`, link);
    const reader = await readerFor(link);
    expect(await reader.read()).toBe(CLOSURE);
    rmSync(link);
    const next = CLOSURE.replace('26.05', '26.11');
    symlinkSync(`/nix/store/${next}`, link);
    expect(await reader.read()).toBe(next);
  });

  it('gives null for a missing link, without a warning', async () => {
    const reader = await readerFor(join(dir, 'absent'));
    expect(await reader.read()).toBeNull();
    expect(warnings()).toEqual([]);
  });

  it('gives null for a regular file or a directory (not a link), without a warning', async () => {
    const file = join(dir, 'file');
    writeFileSync(file, CLOSURE);
    const sub = join(dir, 'sub');
    mkdirSync(sub);
    expect(await (await readerFor(file)).read()).toBeNull();
    expect(await (await readerFor(sub)).read()).toBeNull();
    expect(warnings()).toEqual([]);
  });

  it('gives null for a link to the root, which has no basename', async () => {
    const link = join(dir, 'current-system');
    symlinkSync('/', link);
    expect(await (await readerFor(link)).read()).toBeNull();
  });

  it('warns once about an unexpected problem, not on every read, and again when it recurs after a good read', async () => {
    const parent = join(dir, 'run');
    const link = join(parent, 'current-system');
    // A path through a regular file: ENOTDIR, neither "missing" nor "not a link".
    writeFileSync(parent, '');
    const reader = await readerFor(link);
    expect(await reader.read()).toBeNull();
    expect(await reader.read()).toBeNull();
    expect(warnings()).toHaveLength(1);
    expect(warnings()[0]).toContain('ENOTDIR');
    expect(warnings()[0]).toContain('omit current_closure');

    rmSync(parent);
    mkdirSync(parent);
    symlinkSync(`/nix/store/${CLOSURE}`, link);
    expect(await reader.read()).toBe(CLOSURE);

    rmSync(parent, { recursive: true });
    writeFileSync(parent, '');
    expect(await reader.read()).toBeNull();
    expect(warnings()).toHaveLength(2);
  });
});
