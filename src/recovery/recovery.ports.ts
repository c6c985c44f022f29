import type { ReplayFrom } from '../protocol/replay-from';
import type { LogRecord } from '../reducer/reducer.types';

/** Where a CP's `X-Nixfleet-Replay-From` goes; the outbound event log provides it. */
export interface ReplayPort {
  requestReplay(value: ReplayFrom, source: 'boot-recovery' | 'heartbeat'): void;
}

export const REPLAY_PORT = Symbol('REPLAY_PORT');

/** The logged events the reducer's state is rebuilt from at start; the outbound event log provides it. */
export interface EventHistoryPort {
  /** Resolves once the log is open and repaired. */
  ready(): Promise<void>;
  records(): readonly LogRecord[];
  /** The highest seq ever logged for a rollout, compacted events included; 0 when none. */
  lastSeq(rolloutId: string): number;
}

export const EVENT_HISTORY_PORT = Symbol('EVENT_HISTORY_PORT');
