import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// The README's first quick-start command must keep working: run the demo for a few seconds.
describe('npm run demo', () => {
  it('starts the dev control plane and the agent, shows heartbeats and /status, and stops both cleanly', () => {
    const dir = mkdtempSync(join(tmpdir(), 'nfa-demo-'));
    try {
      const demo = join(__dirname, '..', 'dist-dev', 'dev', 'demo.js');
      const r = spawnSync(process.execPath, [demo, '--dir', join(dir, 'demo'), '--for', '6', '--heartbeat-interval', '1'], {
        encoding: 'utf8',
        timeout: 30_000,
      });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/\[demo\] status:\s+curl -s http:\/\/127\.0\.0\.1:\d+\/status/);
      expect(r.stdout).toMatch(/CP <- heartbeat #3 from web-01 \(CN web-01\)/);
      expect(r.stdout).toMatch(/agent \/status: up \d+ s, last heartbeat ok at \d{4}-/);
      expect(r.stdout).toMatch(/agent exited with 0; dev control plane closed/);
      const log = readFileSync(join(dir, 'demo', 'agent.log'), 'utf8');
      for (const line of log.trim().split('\n')) expect(() => JSON.parse(line)).not.toThrow();
      expect(log).toMatch(/boot recovery: control plane reached/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
