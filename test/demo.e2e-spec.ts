import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The README's first quick-start command must keep working: run the demo for a few seconds.
describe('npm run demo', () => {
  it('runs a rollout through the agent, heals a CP wipe by replay, shows heartbeats and /status, and stops both cleanly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nfa-demo-'));
    try {
      const demo = join(__dirname, '..', 'dist-dev', 'dev', 'demo.js');
      const r = spawnSync(process.execPath, [demo, '--dir', join(dir, 'demo'), '--for', '15', '--heartbeat-interval', '1'], {
        encoding: 'utf8',
        timeout: 40_000,
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/\[demo\] status:\s+curl -s http:\/\/127\.0\.0\.1:\d+\/status/);
      expect(r.stdout).toMatch(/CP <- heartbeat #3 \(CN web-01\)/);
      const story = [
        /CP queues a dispatch: stable@a1b2c3d4/,
        /CP <- event DispatchAck seq 1\n/,
        /CP <- event ActivationStarted seq 2\n/,
        /CP <- event ActivationCompleted seq 3\n/,
        /CP <- event Converged seq 4\n/,
        /agent \/status: stable@a1b2c3d4 Converged, last seq 4, delivered through 4/,
        /CP loses all state/,
        /CP <- event DispatchAck seq 1 \(replayed from the agent's log\)/,
        /CP <- event Converged seq 4 \(replayed from the agent's log\)/,
        /replay done: the CP holds seqs 1, 2, 3, 4 again; agent \/status replay: from seq 0, 4 resent, missing \[\]/,
      ];
      let from = 0;
      for (const line of story) {
        const at = r.stdout.slice(from).search(line);
        expect({ line: String(line), found: at >= 0 }).toEqual({ line: String(line), found: true });
        from += at;
      }
      expect(r.stdout).toMatch(/agent exited with 0; dev control plane closed/);
      const log = readFileSync(join(dir, 'demo', 'agent.log'), 'utf8');
      for (const line of log.trim().split('\n')) expect((): unknown => JSON.parse(line)).not.toThrow();
      expect(log).toMatch(/boot recovery: control plane reached/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

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
