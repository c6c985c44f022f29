/** PROTOCOL §5: the reducer's input queue is bounded; a producer that finds it full waits. */
export const REDUCER_QUEUE_CAPACITY = 64;

/** State changes kept per rollout for `/status` (RolloutHistory): enough for one rollout's whole life (Pending to Reverted is five). */
export const TRANSITIONS_KEPT = 10;
