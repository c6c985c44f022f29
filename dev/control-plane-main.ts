import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { DevControlPlane } from './control-plane';
import { ManifestSigner } from './manifest-signer';
import { makePki, PKI_FILES } from './pki';

const USAGE =
  'usage: control-plane-main --pki-dir DIR [--make-pki] [--machine-id web-01] [--server-name NAME]... [--port 8443] [--host 127.0.0.1] [--trust-file PATH]' +
  ' [--dispatch ROLLOUT_ID=CLOSURE [--dispatch-soak SECS]]';

/** `stable@a1b2c3d4=<store path basename>`: the rollout id as the CP names it, the closure as the agent resolves it. */
const DISPATCH = /^([^=\s]+)=([^=\s/]+)$/;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      'pki-dir': { type: 'string' },
      'make-pki': { type: 'boolean', default: false },
      'machine-id': { type: 'string', default: 'web-01' },
      port: { type: 'string', default: '8443' },
      host: { type: 'string', default: '127.0.0.1' },
      // Also valid in the server certificate (e.g. the compose service name).
      'server-name': { type: 'string', multiple: true },
      // Serve signed rollout manifests (PROTOCOL §12) with fresh keys, and write the trust file naming them here.
      'trust-file': { type: 'string' },
      // A rollout, as the demo shows one (docker/compose.yaml): queued once the machine's first heartbeat is answered.
      dispatch: { type: 'string' },
      'dispatch-soak': { type: 'string', default: '10' },
    },
  });
  const dir = values['pki-dir'];
  const port = Number(values.port);
  if (!dir || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(USAGE);
  const order = values.dispatch === undefined ? null : DISPATCH.exec(values.dispatch);
  const soakSecs = Number(values['dispatch-soak']);
  if (order === null && values.dispatch !== undefined)
    throw new Error(`--dispatch ${values.dispatch}: expected ROLLOUT_ID=CLOSURE\n${USAGE}`);
  if (!Number.isInteger(soakSecs) || soakSecs < 0)
    throw new Error(`--dispatch-soak ${values['dispatch-soak']}: expected whole seconds\n${USAGE}`);
  // Keep an existing PKI: a restarted CP must still be trusted by agents holding the old CA.
  if (values['make-pki'] && !fs.existsSync(path.join(dir, PKI_FILES.caCert))) {
    await makePki(dir, { machineId: values['machine-id'], serverNames: values['server-name'] ?? [] });
  }
  const trustFile = values['trust-file'];
  // The keys live in this process only: a restarted CP writes a new trust file, and agents must re-read it.
  let signer: ManifestSigner | undefined;
  if (trustFile) {
    signer = new ManifestSigner();
    await signer.writeTrustFile(trustFile);
  }
  const cp = await DevControlPlane.start({
    pki: {
      caCertPath: path.join(dir, PKI_FILES.caCert),
      serverCertPath: path.join(dir, PKI_FILES.serverCert),
      serverKeyPath: path.join(dir, PKI_FILES.serverKey),
    },
    host: values.host,
    port,
    // A fresh process has lost whatever an earlier one held: ask agents to replay.
    autoReplayFrom: 'always',
    signer,
  });
  process.stdout.write(`nixfleet dev control plane listening on ${cp.url}\n`);
  if (trustFile) process.stdout.write(`signing rollout manifests; trust file for agents (--trust-file): ${path.resolve(trustFile)}\n`);
  if (order !== null) dispatchOnFirstHeartbeat(cp, values['machine-id'], order[1], order[2], soakSecs);
  const stop = (): void => {
    cp.close().catch((err: unknown) => process.stderr.write(`close failed: ${String(err)}\n`));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/**
 * Queues one dispatch once `machineId` has heartbeated (the soak then counts
 * from its activation, not from the CP's start), and prints each event of
 * that rollout as it arrives: the rollout as `docker compose logs` shows it.
 */
function dispatchOnFirstHeartbeat(cp: DevControlPlane, machineId: string, rolloutId: string, closure: string, soakSecs: number): void {
  process.stdout.write(`will dispatch ${rolloutId} -> ${closure} (soak ${soakSecs} s) once ${machineId} heartbeats\n`);
  let queued = false;
  let printed = 0;
  const watch = setInterval(() => {
    if (!queued && cp.heartbeats.some((h) => h.machineId === machineId && h.status === 200)) {
      queued = true;
      cp.queueDispatch(machineId, {
        rollout_id: rolloutId,
        target_closure: closure,
        soak_due_at: new Date(Date.now() + soakSecs * 1000).toISOString(),
      });
      process.stdout.write(`queued a dispatch for ${machineId}: ${rolloutId} -> ${closure}\n`);
    }
    const events = cp.events(machineId, rolloutId);
    for (; printed < events.length; printed++)
      process.stdout.write(`event ${events[printed].kind} seq ${events[printed].seq} of ${rolloutId}\n`);
  }, 200);
  watch.unref();
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
