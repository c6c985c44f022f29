import type { RandomSource } from '../clock/random';
import { type BackoffPolicy, backoffDelayMs } from '../jobs/backoff';
import { pause } from '../jobs/wait';
import type { ReducerInputPort } from './reducer.ports';
import { EventsNotDurableError } from './reducer.service';
import type { ReducerInput, TransitionResult } from './reducer.types';

// A retry on a full disk costs one failed write: often enough that a held rollout moves soon after space returns.
const HELD_BACKOFF: BackoffPolicy = { firstMs: 1_000, capMs: 10_000 };

export interface SubmitUntilDurableOptions {
  /** Aborted at shutdown: the wait ends and the input is given up (null). */
  signal: AbortSignal;
  random: RandomSource;
  /** Each time the input is held back: the failure, how many so far, and the wait before the next try. */
  onHeld(err: EventsNotDurableError, failures: number, retryInMs: number): void;
}

/**
 * Submits an input that must not be lost to a full or failing disk (a
 * dispatch, an activation's outcome): while its events cannot be made
 * durable, it is submitted again with backoff, until it is applied or the
 * agent stops. Any other failure is thrown as it is.
 */
export async function submitUntilDurable(
  reducer: Pick<ReducerInputPort, 'submit'>,
  input: ReducerInput,
  o: SubmitUntilDurableOptions,
): Promise<TransitionResult | null> {
  for (let failures = 1; ; failures += 1) {
    try {
      return await reducer.submit(input);
    } catch (err) {
      if (!(err instanceof EventsNotDurableError)) throw err;
      const delay = backoffDelayMs(HELD_BACKOFF, failures, o.random);
      o.onHeld(err, failures, delay);
      // Inside the run of the job that holds the input: shutdown cuts the wait, and the input is given up.
      if (!(await pause(delay, o.signal))) return null;
    }
  }
}
