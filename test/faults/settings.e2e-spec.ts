import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makePki, type Pki } from '../../dev/pki';
import { runAgentSync } from '../support/agent-process';

/**
 * Bad settings, a few representative ones: one line per problem naming the
 * flag, the variable and the file key, exit 2, nothing started. The many
 * others (missing required settings, http URLs, unreadable files, remote
 * admin, intervals, unknown flags, a bad --config file, OpenSSH RSA keys, a
 * foreign machine id) are in test/config.e2e-spec.ts.
 */
describe('faults: bad settings', () => {
  let dir: string;
  let pki: Pki;
  let stateDir: string;
  let base: string[];

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), 'nfa-fault-settings-'));
    pki = await makePki(join(dir, 'pki'));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  beforeEach(() => {
    stateDir = join(dir, `state-${Math.random().toString(36).slice(2)}`);
    base = ['--control-plane-url', 'https://cp.example:8443', '--machine-id', pki.machineId, '--state-dir', stateDir];
  });

  /** Exit 2, exactly these problem lines, the closing line, no log output, no state dir. */
  function refused(args: string[], env: Record<string, string>, problems: RegExp[]): string {
    const r = runAgentSync(args, env);
    expect(r.status).toBe(2);
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines.slice(-1)).toEqual(['the agent did not start; fix the settings above (see --help) and start it again']);
    const problemLines = lines.slice(0, -1);
    expect(problemLines).toHaveLength(problems.length);
    for (const p of problems) expect(problemLines).toContainEqual(expect.stringMatching(p));
    expect(r.stdout).toBe('');
    expect(existsSync(stateDir)).toBe(false);
    return r.stderr;
  }

  it('an --activation-command that is not a JSON argv, from the environment: one line that says what it must be and where it came from', () => {
    refused([...base, '--activation-backend', 'command'], { NIXFLEET_AGENT_ACTIVATION_COMMAND: '/usr/local/bin/activate {closure}' }, [
      /^config error: --activation-command \(env NIXFLEET_AGENT_ACTIVATION_COMMAND, file key "activationCommand"\): must be a JSON array of strings, e\.g\. \["\/usr\/local\/bin\/activate", "\{closure\}"\], got "\/usr\/local\/bin\/activate \{closure\}" from NIXFLEET_AGENT_ACTIVATION_COMMAND$/,
    ]);
  });

  it('several bad values from a file, the environment and a flag: each its own line, each with its source', () => {
    const file = join(dir, 'agent.json');
    writeFileSync(file, JSON.stringify({ eventLogMaxMb: 0 }));
    refused([...base, '--config', file, '--store-dir', 'nix/store'], { NIXFLEET_AGENT_ON_HEALTH_FAILURE: 'reboot' }, [
      new RegExp(
        `^config error: --event-log-max-mb \\(env NIXFLEET_AGENT_EVENT_LOG_MAX_MB, file key "eventLogMaxMb"\\): must be at least 1 MiB, got 0 from "eventLogMaxMb" in ${file}$`,
      ),
      /^config error: --on-health-failure \(env NIXFLEET_AGENT_ON_HEALTH_FAILURE, file key "onHealthFailure"\): must be one of: halt, rollback-and-halt, got "reboot" from NIXFLEET_AGENT_ON_HEALTH_FAILURE$/,
      /^config error: --store-dir \(env NIXFLEET_AGENT_STORE_DIR, file key "storeDir"\): must be an absolute path, got "nix\/store" from --store-dir$/,
    ]);
  });

  it('a client key that does not belong to the certificate: one line naming both files, and not a byte of the key', () => {
    const stderr = refused(
      [...base, '--ca-cert', pki.caCertPath, '--client-cert', pki.client.certPath, '--client-key', pki.mismatchedKeyPath],
      {},
      [new RegExp(`${pki.mismatchedKeyPath}.*${pki.client.certPath}|${pki.client.certPath}.*${pki.mismatchedKeyPath}`)],
    );
    expect(stderr).not.toMatch(/-----BEGIN|PRIVATE KEY/);
    const body = readFileSync(pki.mismatchedKeyPath, 'utf8')
      .split('\n')
      .filter((l) => /^[A-Za-z0-9+/=]{16,}$/.test(l));
    expect(body.length).toBeGreaterThan(0);
    for (const line of body) expect(stderr).not.toContain(line);
  });
});
