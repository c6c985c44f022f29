import { spawn } from 'node:child_process';
import { AGENT_MAIN, cleanEnv } from './agent-process';

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * The built CLI (`status` and friends) as a child process, SIGKILLed if it
 * runs past `timeoutMs` (15 s). Not spawnSync: the dev CP lives in the test's
 * process and must keep answering the agent meanwhile.
 */
export function runCli(
  args: string[],
  env: Record<string, string> = {},
  { cwd, timeoutMs = 15_000 }: { cwd?: string; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [AGENT_MAIN, ...args], { cwd, env: cleanEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
