import { fstatSync } from 'node:fs';

/** Which of the process's output streams journald reads: their lines carry a syslog priority prefix. */
export interface JournalStreams {
  readonly stdout: boolean;
  readonly stderr: boolean;
}

export const NO_JOURNAL: JournalStreams = { stdout: false, stderr: false };

const DEV_INO = /^(\d+):(\d+)$/;

/**
 * systemd.exec(5): `JOURNAL_STREAM=<dev>:<inode>` names the stream a service's
 * stdout or stderr was connected to. Being set is not enough: the variable is
 * inherited, and the agent may run with its output piped or redirected while
 * it is set (a manual run from a unit's shell, a supervisor's pipe). Only a
 * descriptor whose device and inode are the named ones talks to journald; a
 * log shipper reading a pipe or file gets pure JSON.
 */
export function journalStreams(
  journalStream: string | null,
  fds: { stdout: number; stderr: number } = { stdout: 1, stderr: 2 },
): JournalStreams {
  const m = journalStream === null ? null : DEV_INO.exec(journalStream);
  if (m === null) return NO_JOURNAL;
  // BigInt: a dev_t can exceed 2^53, and a near miss must not count as the journal.
  const dev = BigInt(m[1]);
  const ino = BigInt(m[2]);
  const isJournal = (fd: number): boolean => {
    try {
      const st = fstatSync(fd, { bigint: true });
      return st.dev === dev && st.ino === ino;
    } catch {
      // A closed descriptor is not the journal.
      return false;
    }
  };
  return { stdout: isJournal(fds.stdout), stderr: isJournal(fds.stderr) };
}

/** journald takes each line as an entry of its own: every line of `text` gets the `<N>` prefix. */
export function withPriority(text: string, priority: number): string {
  return text.replace(/^(?=[^\n])/gm, `<${priority}>`);
}
