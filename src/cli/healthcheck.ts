// `node dist/cli/healthcheck.js`: the container image's HEALTHCHECK (docker/Dockerfile).
// One GET of /healthz (liveness, as the systemd watchdog judges it): exit 0 when it
// answers 200, 1 otherwise (Docker's "unhealthy"; 2 is reserved by Docker). Not
// /readyz: a control plane that is down makes the agent not ready, not broken.
// Kept small and free of Nest and class-validator: Docker runs it every 30 s.
import { readFileSync } from 'node:fs';
import { DEFAULT_CONFIG_PATH } from '../config/config.constants';
import { formatListenAddress, type ListenAddress, parseListenAddress } from '../config/listen-address';
import { getFromAdmin } from './admin-request';

/** The agent's own default (settings.ts DEFAULT_ADMIN_LISTEN; a unit test keeps them equal). */
export const HEALTHCHECK_DEFAULT_ADMIN_LISTEN = '127.0.0.1:9850';
const ENV_ADMIN_LISTEN = 'NIXFLEET_AGENT_ADMIN_LISTEN';
const ENV_CONFIG = 'NIXFLEET_AGENT_CONFIG';

export type HealthcheckTarget = { ok: true; address: ListenAddress; from: string } | { ok: false; reason: string };

/**
 * Where the agent's admin endpoint is, found as the agent finds its setting
 * (a HEALTHCHECK has no flags): the environment, else the `adminListen` key of
 * the settings file (NIXFLEET_AGENT_CONFIG's, else /etc/nixfleet-agent.json
 * when it exists; none when that variable is set and empty), else the default. A wildcard address (0.0.0.0, [::]) is
 * asked on loopback, inside the container.
 */
export function healthcheckTarget(env: NodeJS.ProcessEnv, readFile: (path: string) => string): HealthcheckTarget {
  let raw = HEALTHCHECK_DEFAULT_ADMIN_LISTEN;
  let from = 'the default';
  const fromEnv = env[ENV_ADMIN_LISTEN];
  const named = env[ENV_CONFIG] !== undefined && env[ENV_CONFIG] !== '';
  const configPath = named ? (env[ENV_CONFIG] ?? '') : DEFAULT_CONFIG_PATH;
  if (fromEnv !== undefined && fromEnv !== '') {
    raw = fromEnv;
    from = `env ${ENV_ADMIN_LISTEN}`;
  } else if (env[ENV_CONFIG] !== '') {
    // NIXFLEET_AGENT_CONFIG set and empty: no settings file at all, as the agent reads it.
    let doc: unknown = null;
    try {
      doc = JSON.parse(readFile(configPath));
    } catch (err) {
      // The default file is read only when it exists, as the agent does.
      const absent = !named && (err as NodeJS.ErrnoException).code === 'ENOENT';
      const where = named ? `${configPath} (env ${ENV_CONFIG})` : configPath;
      if (!absent) return { ok: false, reason: `cannot read the admin address from ${where}: ${(err as Error).message}` };
    }
    const value = (doc as Record<string, unknown> | null)?.adminListen;
    if (typeof value === 'string') {
      raw = value;
      from = `${configPath} key "adminListen"`;
    }
  }
  const parsed = parseListenAddress(raw);
  if (!parsed.ok) return { ok: false, reason: `admin address "${raw}" from ${from} ${parsed.reason}` };
  const address = parsed.value;
  if (address.kind === 'tcp' && (address.host === '0.0.0.0' || address.host === '::')) {
    return { ok: true, address: { ...address, host: address.host === '::' ? '::1' : '127.0.0.1' }, from };
  }
  return { ok: true, address, from };
}

/** One line for Docker's health log (`docker inspect`), and the exit status. */
export async function runHealthcheck(env: NodeJS.ProcessEnv, timeoutMs = 4000): Promise<{ code: 0 | 1; line: string }> {
  const target = healthcheckTarget(env, (path) => readFileSync(path, 'utf8'));
  if (!target.ok) return { code: 1, line: `nixfleet-agent healthcheck: ${target.reason}` };
  const where = formatListenAddress(target.address);
  try {
    const { status, body } = await getFromAdmin(target.address, '/healthz', timeoutMs);
    if (status === 200) return { code: 0, line: `nixfleet-agent healthcheck: ${where}/healthz ok` };
    const failing = (body as { failing?: unknown } | null)?.failing;
    const detail = Array.isArray(failing) ? `: ${failing.map(String).join('; ')}` : '';
    return { code: 1, line: `nixfleet-agent healthcheck: ${where}/healthz answered ${status}${detail}` };
  } catch (err) {
    return {
      code: 1,
      line: `nixfleet-agent healthcheck: no answer from ${where}/healthz (${(err as Error).message}; address from ${target.from})`,
    };
  }
}

if (require.main === module) {
  void runHealthcheck(process.env).then(({ code, line }) => {
    (code === 0 ? process.stdout : process.stderr).write(`${line}\n`);
    process.exitCode = code;
  });
}
