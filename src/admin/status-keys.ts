import type { StatusDocument } from './status.contract';

// Apart from the contract: its decorated classes are for the tests that check documents against it, and the
// controller needs only the keys, so a running agent never loads them.
/** The document's keys in the order it is written; the compiler checks each is there once. */
export const STATUS_KEYS = Object.keys({
  machineId: true,
  agentVersion: true,
  controlPlaneUrl: true,
  pid: true,
  startedAt: true,
  uptimeSecs: true,
  currentClosure: true,
  components: true,
  heartbeat: true,
  recovery: true,
  rollouts: true,
  outbound: true,
  eventLog: true,
  dispatch: true,
  activation: true,
  probes: true,
  trust: true,
  certificate: true,
  reducer: true,
  jobs: true,
} satisfies Record<keyof StatusDocument, true>) as (keyof StatusDocument)[];
