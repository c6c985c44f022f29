import { dirname, join } from 'node:path';
import type { ClientIdentity, Pki } from './pki';

export interface DevAgentOptions {
  controlPlaneUrl: string;
  machineId: string;
  pki: Pki;
  /** Default: the PKI's plain client certificate and key. */
  identity?: ClientIdentity;
  stateDir: string;
  currentSystemPath: string;
  /** Given, the symlink backend may only point into it. */
  storeDir?: string;
  heartbeatIntervalSecs: number;
  adminPort: number;
  /** Default: health-checks.json beside the state dir. */
  healthChecksFile?: string;
  /** Default: trust.json beside the state dir. */
  trustFile?: string;
}

/**
 * The flags every run of the agent against the dev CP needs: where the CP
 * is, who the agent is, where its state lives, its health checks and its
 * trust file (beside the state dir unless given: never the host's own /etc).
 */
export function connectionArgs(o: {
  controlPlaneUrl: string;
  machineId: string;
  caCertPath: string;
  identity: ClientIdentity;
  stateDir: string;
  currentSystemPath: string;
  healthChecksFile?: string;
  trustFile?: string;
}): string[] {
  return [
    '--control-plane-url',
    o.controlPlaneUrl,
    '--machine-id',
    o.machineId,
    '--ca-cert',
    o.caCertPath,
    '--client-cert',
    o.identity.certPath,
    '--client-key',
    o.identity.keyPath,
    '--state-dir',
    o.stateDir,
    '--current-system-path',
    o.currentSystemPath,
    '--health-checks-file',
    o.healthChecksFile ?? join(dirname(o.stateDir), 'health-checks.json'),
    '--trust-file',
    o.trustFile ?? join(dirname(o.stateDir), 'trust.json'),
  ];
}

/** The flags the demo and the benchmarks run the built agent with: the dev CP, its PKI, the symlink backend. */
export function devAgentArgs(o: DevAgentOptions): string[] {
  return [
    ...connectionArgs({ ...o, caCertPath: o.pki.caCertPath, identity: o.identity ?? o.pki.client }),
    ...(o.storeDir === undefined ? [] : ['--store-dir', o.storeDir]),
    '--activation-backend',
    'symlink',
    '--heartbeat-interval',
    String(o.heartbeatIntervalSecs),
    '--admin-listen',
    `127.0.0.1:${o.adminPort}`,
  ];
}
