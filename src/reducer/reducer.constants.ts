/** PROTOCOL §5: the reducer's input queue is bounded; a producer that finds it full waits. */
export const REDUCER_QUEUE_CAPACITY = 64;
