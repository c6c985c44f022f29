import type { ReplayFrom } from '../protocol/replay-from';

/** Where a CP's `X-Nixfleet-Replay-From` goes; the outbound event log provides it. */
export interface ReplayPort {
  requestReplay(value: ReplayFrom, source: 'boot-recovery' | 'heartbeat'): void;
}

export const REPLAY_PORT = Symbol('REPLAY_PORT');
