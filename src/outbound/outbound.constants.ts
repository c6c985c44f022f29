import { DELIVERY_CONNECTIONS } from '../comms/comms.constants';
import type { PacerSettings } from './delivery-pacer';

/** Backoff of event delivery (PROTOCOL §6: retry later with exponential backoff). */
export const DELIVERY_BACKOFF_FIRST_MS = 1_000;
export const DELIVERY_BACKOFF_CAP_MS = 60_000;
/** While the CP refuses our identity (401/403/426) nothing will change quickly: try less often. */
export const DELIVERY_PAUSED_CAP_MS = 300_000;
/** The drainer also runs on this slow timer, in case a kick was missed. */
export const DRAIN_SWEEP_MS = 10_000;
/**
 * How hard delivery (a replay above all) may press the CP; see DeliveryPacer.
 * Up to one rollout in flight per delivery connection, starting at two; down
 * to one send every 16 round trips while the CP struggles.
 */
export const DELIVERY_PACING: PacerSettings = {
  maxWindow: DELIVERY_CONNECTIONS,
  initialWindow: 2,
  minWindow: 1 / 16,
  riseFactor: 2,
  riseSlackMs: 20,
  baseWindowMs: 10_000,
};
/** The pacing settings DrainerService uses: DELIVERY_PACING; a test on a loaded machine may widen the latency slack. */
export const DELIVERY_PACING_SETTINGS = Symbol('DELIVERY_PACING_SETTINGS');
/** How often the event log is checked for compaction. */
export const COMPACT_EVERY_MS = 60 * 60 * 1000;
export const DRAIN_SWEEP_NAME = 'outbound-drain';
export const COMPACT_NAME = 'outbound-compact';
/** The file operations under the event log; a test may wrap them to inject faults the real disk will not produce on cue. */
export const EVENT_LOG_FS = Symbol('EVENT_LOG_FS');
