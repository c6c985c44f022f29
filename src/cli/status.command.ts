import { formatListenAddress, type ListenAddress } from '../config/listen-address';
import { getFromAdmin } from './admin-request';

/** Exit statuses of `nixfleet-agent status`. */
export const STATUS_EXIT = { healthy: 0, degraded: 1, unreachable: 3 } as const;

export interface StatusCommandIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

/** Asks the running agent for /status and prints it for a person (or raw with --json). */
export async function runStatusCommand(address: ListenAddress, json: boolean, io: StatusCommandIo): Promise<number> {
  let answer;
  try {
    answer = await getFromAdmin(address, '/status');
  } catch (err) {
    io.err(
      `nixfleet-agent status: no agent answers at ${formatListenAddress(address)} (${(err as Error).message}); is the agent running, and is --admin-listen the same as its own?`,
    );
    return STATUS_EXIT.unreachable;
  }
  if (answer.status !== 200 || typeof answer.body !== 'object' || answer.body === null) {
    io.err(`nixfleet-agent status: ${formatListenAddress(address)} answered ${answer.status}, not a status document`);
    return STATUS_EXIT.unreachable;
  }
  if (json) {
    io.out(JSON.stringify(answer.body, null, 2));
    return STATUS_EXIT.healthy;
  }
  const s = answer.body as Record<string, unknown>;
  io.out(
    [
      `agent        ${String(s.machineId)} (nixfleet-agent ${String(s.agentVersion)}, pid ${String(s.pid)}, up ${String(s.uptimeSecs)} s)`,
      `control plane ${String(s.controlPlaneUrl)}`,
    ].join('\n'),
  );
  return STATUS_EXIT.healthy;
}
