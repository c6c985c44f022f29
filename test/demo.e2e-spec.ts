import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const OLD = `${'b'.repeat(32)}-nixos-system-web-01-26.11`;

/** Each pattern found after the previous one's match: a story told in this order. */
function expectInOrder(text: string, patterns: readonly RegExp[]): void {
  let from = 0;
  for (const pattern of patterns) {
    const m = pattern.exec(text.slice(from));
    expect({ line: String(pattern), found: m !== null }).toEqual({ line: String(pattern), found: true });
    if (m !== null) from += m.index + m[0].length;
  }
}

/** The text between the first match of `start` and the first match of `end` after it. */
function between(text: string, start: RegExp, end: RegExp): string {
  const a = start.exec(text);
  if (a === null) return '';
  const rest = text.slice(a.index + a[0].length);
  const b = end.exec(rest);
  return b === null ? rest : rest.slice(0, b.index);
}

// The README's first quick-start command must keep working: run the demo through its whole story.
describe('npm run demo', () => {
  it('says which build it waits for before each one, instead of ~10 s of silence', () => {
    const pkg = JSON.parse(readFileSync(join(__dirname, '..', 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    const steps = pkg.scripts.demo.split('&&').map((s) => s.trim());
    const builds = steps.flatMap((step, i) => (/^npm run (--silent )?build/.test(step) ? [i] : []));
    expect(builds.length).toBe(2);
    for (const i of builds) expect(steps[i - 1]).toMatch(/^echo '\[demo\] building .+…'$/);
    expect(steps.at(-1)).toBe('node dist-dev/dev/demo.js');
  });

  it('converges a healthy rollout, heals a CP wipe by replay, fails a rollout on its probe and rolls it back, shows status and log lines, and stops both cleanly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nfa-demo-'));
    try {
      const demo = join(__dirname, '..', 'dist-dev', 'dev', 'demo.js');
      const r = spawnSync(process.execPath, [demo, '--dir', join(dir, 'demo'), '--until-done', '--heartbeat-interval', '1'], {
        encoding: 'utf8',
        timeout: 100_000,
      });
      expect(r.status).toBe(0);
      const out = r.stdout;
      expect(out).toMatch(/\[demo\] status:\s+curl -s http:\/\/127\.0\.0\.1:\d+\/status/);
      expect(out).toMatch(/\[demo\] health checks: .*health-checks\.json: probe app-http GETs http:\/\/127\.0\.0\.1:\d+\/health/);
      expect(out).toMatch(/CP <- heartbeat #3 \(CN web-01\)/);
      // What the CP holds, in the order it got it.
      expectInOrder(out, [
        /CP queues a dispatch: stable@a1b2c3d4 -> b{12}… \(soak 8 s\)/,
        /CP <- event DispatchAck seq 1 of stable@a1b2c3d4\n/,
        /CP <- event ActivationStarted seq 2 of stable@a1b2c3d4\n/,
        /CP <- event ActivationCompleted seq 3 of stable@a1b2c3d4\n/,
        /CP <- event ProbeTopologyDeclared seq 4 of stable@a1b2c3d4: app-http \(enforce\)\n/,
        /CP <- event ProbeObservedFirst seq 5 of stable@a1b2c3d4: app-http\n/,
        /CP <- event ProbeResult seq 6 of stable@a1b2c3d4: app-http pass\n/,
        /CP <- event Converged seq 7 of stable@a1b2c3d4: running b{12}…\n/,
        /agent \/status: stable@a1b2c3d4 Converged, last seq 7, delivered through 7/,
        /CP loses all state/,
        /CP <- event DispatchAck seq 1 of stable@a1b2c3d4 \(replayed from the agent's log\)/,
        /CP <- event Converged seq 7 of stable@a1b2c3d4: running b{12}… \(replayed from the agent's log\)/,
        /replay done: the CP holds seqs 1, 2, 3, 4, 5, 6, 7 again; agent \/status replay: from seq 0, 7 resent, missing \[\]/,
        /CP queues a dispatch: stable@e5f6a7b8 -> c{12}… \(soak 3 s\)/,
        /CP <- event DispatchAck seq 1 of stable@e5f6a7b8\n/,
        /CP <- event ActivationStarted seq 2 of stable@e5f6a7b8\n/,
        /CP <- event ActivationCompleted seq 3 of stable@e5f6a7b8\n/,
        /CP <- event ProbeTopologyDeclared seq 4 of stable@e5f6a7b8: app-http \(enforce\)\n/,
        /CP <- event ProbeObservedFirst seq 5 of stable@e5f6a7b8: app-http\n/,
        /CP <- event ProbeResult seq 6 of stable@e5f6a7b8: app-http fail \(GET http:\/\/127\.0\.0\.1:\d+\/health answered 503, expected 200\)\n/,
        /CP <- event ProbeFailureFirst seq 7 of stable@e5f6a7b8: app-http\n/,
        /CP <- event Failed seq 8 of stable@e5f6a7b8: app-http failing for 1\d s, policy rollback-and-halt\n/,
        /CP <- event RollbackComplete seq 9 of stable@e5f6a7b8: back to b{12}…, exit code 0\n/,
        /stable@e5f6a7b8 failed after 10 s of failing probe and was rolled back: current-system -> b{12}…, stable@a1b2c3d4's closure\n/,
        /the app on the closure rolled back to: GET \/health -> 200\n/,
        /steady state/,
        /stopping \(the story is told\): SIGTERM to the agent\n/,
        /agent exited with 0; dev control plane closed\n$/,
      ]);
      // The app's answers to the agent's probe, as the host's closure changed under it.
      expectInOrder(out, [/app: GET \/health -> 200 \(the host runs b{12}…\)/, /app: GET \/health -> 503 \(the host runs c{12}…\)/]);
      // The agent's own line per state change.
      expectInOrder(out, [
        /agent log: rollout stable@a1b2c3d4: Soaking since \S+, soak due at \S+\n/,
        /agent log: rollout stable@a1b2c3d4: Converged on b{32}-nixos-system-web-01-26\.11\n/,
        /agent log: rollout stable@e5f6a7b8: Soaking since /,
        /agent log: rollout stable@e5f6a7b8: Failed: enforce probe\(s\) app-http failing for 1\d s; rolling back to the closure from before the dispatch\n/,
        /agent log: rollout stable@e5f6a7b8: Reverted: the host runs b{32}-nixos-system-web-01-26\.11 again/,
      ]);

      // `nixfleet-agent status` while rollout 1 soaks: the probe passes, the soak holds it.
      const soaking = between(out, /stable@a1b2c3d4 soaks on the new closure/, /agent \/status: stable@a1b2c3d4 Converged/);
      expectInOrder(soaking, [
        /\$ nixfleet-agent status\n/,
        /\| web-01 \(nixfleet-agent [^)]*\): HEALTHY\n/,
        /\| +health +stable@a1b2c3d4 Soaking: soak ends in \d+ s\n/,
        /\| +probe app-http \(http, enforce\): pass since /,
      ]);
      // While rollout 2 soaks: why it is not converging, and how long before it fails.
      const failing = between(out, /stable@e5f6a7b8: (its soak is over, but )?the probe fails/, /stable@e5f6a7b8 failed after/);
      expectInOrder(failing, [
        /\$ nixfleet-agent status\n/,
        /\| +health +stable@e5f6a7b8 Soaking: probe app-http failing for \d+ s \(the rollout fails if it still fails in \d+ s\)/,
        /\| +probe app-http \(http, enforce\): FAIL since \S+ \(\d+ s ago\): GET http:\/\/127\.0\.0\.1:\d+\/health answered 503, expected 200\n/,
      ]);
      // After the rollback: the verdict, the policy and where the host went back to.
      const reverted = between(out, /stable@e5f6a7b8 failed after/, /the app on the closure rolled back to/);
      expectInOrder(reverted, [
        /\$ nixfleet-agent status\n/,
        // Since when: the agent's own record of the state change (a time and how long ago).
        /\| +rollouts +stable@a1b2c3d4 +Converged since \S+Z \(\d+ s ago\) \(last seq 7, delivered through 7\)\n/,
        /\| +stable@e5f6a7b8 +Reverted since \S+Z \(\d+ s ago\) \(last seq 9, delivered through 9\)\n/,
        new RegExp(
          `\\| +health +stable@e5f6a7b8 Reverted \\(failed \\S+ \\(\\d+ s ago\\)\\); policy rollback-and-halt; rolled back to ${OLD}\\n`,
        ),
        new RegExp(`\\| warning: rollout stable@e5f6a7b8 failed and was rolled back to ${OLD}\\n`),
      ]);

      expect(basename(readlinkSync(join(dir, 'demo', 'current-system')))).toBe(OLD);
      const log = readFileSync(join(dir, 'demo', 'agent.log'), 'utf8');
      for (const line of log.trim().split('\n')) expect((): unknown => JSON.parse(line)).not.toThrow();
      expect(log).toMatch(/boot recovery: control plane reached/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 120_000);

  it('stopped with Ctrl-C (SIGINT to its whole process group), stops the agent once and exits 0 with a clean last line', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'nfa-demo-int-'));
    try {
      const demo = join(__dirname, '..', 'dist-dev', 'dev', 'demo.js');
      // Its own process group, as a terminal's foreground job is: Ctrl-C signals the whole group.
      const child = spawn(process.execPath, [demo, '--dir', join(dir, 'demo'), '--heartbeat-interval', '1'], {
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      let interrupted = false;
      const exited = new Promise<number | string>((resolve) => child.on('exit', (code, signal) => resolve(code ?? signal ?? 'unknown')));
      await new Promise<void>((resolve, reject) => {
        const onData = (chunk: Buffer): void => {
          out += chunk.toString('utf8');
          if (!interrupted && /CP <- heartbeat #3 /.test(out)) {
            interrupted = true;
            process.kill(-(child.pid ?? 0), 'SIGINT');
            resolve();
          }
        };
        child.stdout.on('data', onData);
        child.stderr.on('data', onData);
        void exited.then(() => reject(new Error(`demo exited before it was interrupted:\n${out}`)));
      });
      expect(await exited).toBe(0);
      const agentPid = Number(/\[demo\] agent pid (\d+)/.exec(out)?.[1]);
      expect(out).toMatch(/\[demo\] stopping \(Ctrl-C\): SIGTERM to the agent\n\[demo\] agent exited with 0; dev control plane closed\n$/);
      expect(out).not.toMatch(/exited with 1|again|failed/);
      // The agent got exactly one stop signal, and is gone.
      const log = readFileSync(join(dir, 'demo', 'agent.log'), 'utf8');
      const shutdown = log
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l) as { context?: string; message: string })
        .filter((l) => l.context === 'Shutdown')
        .map((l) => l.message);
      expect(shutdown).toEqual(['SIGTERM received: stopping the jobs, finishing in-flight work, closing listeners', 'stopped cleanly']);
      // Signal 0 only asks whether the pid exists: ESRCH, no such process.
      expect(() => process.kill(agentPid, 0)).toThrow(/ESRCH/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
