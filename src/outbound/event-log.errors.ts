/** An append, a mark or a compaction did not reach the disk; the message names the file and the errno. */
export class EventLogWriteError extends Error {
  override readonly name = 'EventLogWriteError';
  constructor(
    message: string,
    /** errno code of the failure, e.g. `ENOSPC`, when there was one. */
    readonly code?: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The caller handed the log something it must not store (a reused seq, an envelope that disagrees). */
export class EventLogInputError extends Error {
  override readonly name = 'EventLogInputError';
}

export function errText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export function errCode(err: unknown): string | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}
