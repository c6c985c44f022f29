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
}

/** The flags the demo and the benchmarks run the built agent with: the dev CP, its PKI, the symlink backend. */
export function devAgentArgs(o: DevAgentOptions): string[] {
  const id = o.identity ?? o.pki.client;
  return [
    '--control-plane-url',
    o.controlPlaneUrl,
    '--machine-id',
    o.machineId,
    '--ca-cert',
    o.pki.caCertPath,
    '--client-cert',
    id.certPath,
    '--client-key',
    id.keyPath,
    '--state-dir',
    o.stateDir,
    '--current-system-path',
    o.currentSystemPath,
    ...(o.storeDir === undefined ? [] : ['--store-dir', o.storeDir]),
    '--activation-backend',
    'symlink',
    '--heartbeat-interval',
    String(o.heartbeatIntervalSecs),
    '--admin-listen',
    `127.0.0.1:${o.adminPort}`,
  ];
}
