import type { DevControlPlane, ReceivedRequest } from '../../dev/control-plane';
import type { World } from './agent-harness';

/**
 * Rollouts handed to the dev CP, and what it recorded of them: the events it
 * holds, every body it was sent, when heartbeats arrived. A fault test
 * asserts the promise on the CP's side: every event arrives, none twice
 * with different bodies.
 */

export const ROLLOUT_A = 'stable@a1b2c3d4';
export const ROLLOUT_B = 'stable@b2c3d4e5';

/** Queues a dispatch of `rolloutId` to `target` whose soak ends `soakMs` from now. */
export function dispatch(world: World, rolloutId: string, target: string, soakMs = 1_500): void {
  world.cp.queueDispatch(world.pki.machineId, {
    rollout_id: rolloutId,
    target_closure: target,
    soak_due_at: new Date(Date.now() + soakMs).toISOString(),
  });
}

/** `seq:Kind` of every event the CP holds for a rollout, in seq order. */
export function heldKinds(world: World, rolloutId: string): string[] {
  return world.cp.events(world.pki.machineId, rolloutId).map((e) => `${e.seq}:${e.kind}`);
}

/** A rollout's events when it converges without health checks: its runners still declare the (empty) topology. */
export const FULL_ROLLOUT = ['1:DispatchAck', '2:ActivationStarted', '3:ActivationCompleted', '4:ProbeTopologyDeclared', '5:Converged'];

/**
 * Every (rollout, seq) the CP was ever sent with more than one distinct body:
 * the promise is that there are none, replays and resends included.
 */
export function seqsWithTwoBodies(cp: DevControlPlane): string[] {
  const bodies = new Map<string, Set<string>>();
  for (const post of cp.eventPosts) {
    const b = post.body as { rolloutId?: string; event?: { seq?: number } } | undefined;
    if (b?.rolloutId === undefined || b.event?.seq === undefined) continue;
    const key = `${b.rolloutId}#${b.event.seq}`;
    bodies.set(key, (bodies.get(key) ?? new Set()).add(post.raw));
  }
  return [...bodies].filter(([, set]) => set.size > 1).map(([key]) => key);
}

/** Seconds between consecutive requests, as the CP saw them arrive. */
export function gapsSecs(requests: readonly ReceivedRequest[]): number[] {
  return requests.slice(1).map((r, i) => (r.receivedAt.getTime() - requests[i].receivedAt.getTime()) / 1000);
}
