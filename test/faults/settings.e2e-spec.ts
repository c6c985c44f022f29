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

  it('a heartbeat interval of "abc": one line saying it is no whole number, not three about its bounds', () => {
    refused([...base, '--heartbeat-interval', 'abc'], {}, [
      /^config error: --heartbeat-interval \(env NIXFLEET_AGENT_HEARTBEAT_INTERVAL, file key "heartbeatInterval"\): must be a whole number of seconds, got "abc" from --heartbeat-interval$/,
    ]);
  });

  it.each([[['--heartbeat-interval', '-5']], [['--heartbeat-interval=-5']]])(
    'a heartbeat interval of -5 given as %j: read as a value, and said to be below 1',
    (args) => {
      refused([...base, ...args], {}, [
        /^config error: --heartbeat-interval \(env NIXFLEET_AGENT_HEARTBEAT_INTERVAL, file key "heartbeatInterval"\): must be at least 1 second, got -5 from --heartbeat-interval$/,
      ]);
    },
  );

  it('a control-plane URL whose port is out of range: one line naming the port, not "must be an https:// URL"', () => {
    refused([...base, '--control-plane-url', 'https://cp.example:84430'], {}, [
      /^config error: --control-plane-url \(env NIXFLEET_AGENT_CONTROL_PLANE_URL, file key "controlPlaneUrl"\): port 84430 is out of range 1-65535, got "https:\/\/cp\.example:84430" from --control-plane-url$/,
    ]);
  });

  it('a --config file that does not exist: that one line, not the required settings it would have held', () => {
    const missing = join(dir, 'no-such-agent.json');
    refused(['--state-dir', stateDir, '--config', missing], {}, [
      new RegExp(`^config error: --config \\(env NIXFLEET_AGENT_CONFIG\\): cannot read ${missing}: no such file$`),
    ]);
    refused(['--state-dir', stateDir], { NIXFLEET_AGENT_CONFIG: missing }, [new RegExp(`cannot read ${missing}: no such file$`)]);
  });

  it('an unknown flag: one line with the flag meant, when one is close', () => {
    refused([...base, '--hearbeat-interval', '5'], {}, [
      /^config error: unknown flag --hearbeat-interval; did you mean --heartbeat-interval\?$/,
    ]);
    refused([...base, '--frobnicate'], {}, [/^config error: unknown flag --frobnicate \(see --help\)$/]);
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
