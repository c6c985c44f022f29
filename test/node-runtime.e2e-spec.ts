import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runAgentSync } from './support/agent-process';

describe('the built agent on a Node.js without zlib.crc32', () => {
  let dir: string;
  let preload: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-node-'));
    // What Node.js 20.11 looks like to the agent: no zlib.crc32, and that version string.
    preload = join(dir, 'old-node.js');
    writeFileSync(preload, "delete require('node:zlib').crc32;\nObject.defineProperty(process.versions, 'node', { value: '20.11.1' });\n");
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('exits 2 with one line naming the running version and the minimum, before reading settings or touching the state dir', () => {
    const stateDir = join(dir, 'state');
    const r = runAgentSync(['--control-plane-url', 'https://cp.example:8443', '--machine-id', 'web-01', '--state-dir', stateDir], {
      NODE_OPTIONS: `--require ${preload}`,
    });
    expect(r.status).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(
      'nixfleet-agent needs Node.js 20.15.0 or newer (^20.15.0 || >=22.2.0); this is Node.js 20.11.1, ' +
        'which lacks zlib.crc32 (the event log checksums every record with it): not started\n',
    );
    expect(existsSync(stateDir)).toBe(false);
  });
});
