import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { watchPoints } from './watch-points';

describe('watchPoints: where a change to the identity files shows, on a real filesystem', () => {
  let dir: string;

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-watch-points-'));
  });
  afterEach(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  const plain = (points: Map<string, Set<string>>): Record<string, string[]> =>
    Object.fromEntries(
      [...points].filter(([d]) => d.startsWith(dir)).map(([d, names]) => [d === dir ? '.' : d.slice(dir.length + 1), [...names].sort()]),
    );

  it('is each file in its own directory when no symlink is on the way, with files of one directory together', () => {
    mkdirSync(join(dir, 'tls'));
    writeFileSync(join(dir, 'tls', 'client.crt'), '');
    writeFileSync(join(dir, 'tls', 'client.key'), '');
    writeFileSync(join(dir, 'ca.crt'), '');

    expect(plain(watchPoints([join(dir, 'tls', 'client.crt'), join(dir, 'tls', 'client.key'), join(dir, 'ca.crt')]))).toEqual({
      tls: ['client.crt', 'client.key'],
      '.': ['ca.crt'],
    });
  });

  it('adds a symlinked directory on the path (sops-nix, agenix): the link in its parent, and the file where the link points', () => {
    mkdirSync(join(dir, 'secrets.d', '7'), { recursive: true });
    writeFileSync(join(dir, 'secrets.d', '7', 'agent.crt'), '');
    symlinkSync('secrets.d/7', join(dir, 'secrets'));

    expect(plain(watchPoints([join(dir, 'secrets', 'agent.crt')]))).toEqual({
      secrets: ['agent.crt'],
      '.': ['secrets'],
      'secrets.d/7': ['agent.crt'],
    });
  });

  it('follows a chain: a symlinked file whose target lies under another symlink (NixOS /etc/static)', () => {
    mkdirSync(join(dir, 'store', 'etc-1', 'agent'), { recursive: true });
    writeFileSync(join(dir, 'store', 'etc-1', 'agent', 'ca.crt'), '');
    symlinkSync(join(dir, 'store', 'etc-1'), join(dir, 'static'));
    mkdirSync(join(dir, 'etc', 'agent'), { recursive: true });
    symlinkSync(join(dir, 'static', 'agent', 'ca.crt'), join(dir, 'etc', 'agent', 'ca.crt'));

    expect(plain(watchPoints([join(dir, 'etc', 'agent', 'ca.crt')]))).toEqual({
      'etc/agent': ['ca.crt'],
      'static/agent': ['ca.crt'],
      '.': ['static'],
      'store/etc-1/agent': ['ca.crt'],
    });
  });

  it('stops at a file that is not there, and at a symlink loop', () => {
    symlinkSync('b', join(dir, 'a'));
    symlinkSync('a', join(dir, 'b'));

    expect(plain(watchPoints([join(dir, 'missing', 'client.crt')]))).toEqual({ missing: ['client.crt'] });
    expect(plain(watchPoints([join(dir, 'a')]))).toEqual({ '.': ['a', 'b'] });
  });
});
