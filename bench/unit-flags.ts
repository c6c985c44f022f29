// The Node.js flags the systemd unit starts the agent with, so that a benchmark runs the agent as a host does.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The words between `node` and `…/main.js` in deploy/systemd/nixfleet-agent.service's ExecStart=. */
export function unitNodeFlags(repoRoot = join(__dirname, '..', '..')): string[] {
  const unit = readFileSync(join(repoRoot, 'deploy', 'systemd', 'nixfleet-agent.service'), 'utf8');
  const execStart = /^ExecStart=(.*)$/m.exec(unit);
  if (!execStart) throw new Error('the systemd unit has no ExecStart=');
  const words = execStart[1].trim().split(/\s+/);
  const node = words.indexOf('node');
  const main = words.findIndex((w) => w.endsWith('/main.js'));
  if (node < 0 || main < node) throw new Error(`cannot find "node … main.js" in ExecStart=${execStart[1]}`);
  return words.slice(node + 1, main);
}
