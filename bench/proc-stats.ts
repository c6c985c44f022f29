// What the benchmarks read of a running process in /proc (Linux only).
import { readdirSync, readFileSync } from 'node:fs';

/** USER_HZ on Linux: the unit of /proc/<pid>/stat's CPU times. */
export const CLOCK_TICKS_PER_SEC = 100;

/** A `Name:  123` field of a /proc status file (VmRSS and VmHWM are in kB). */
export function procField(status: string, name: string): number {
  const m = new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(status);
  if (!m) throw new Error(`no ${name} in /proc status`);
  return Number(m[1]);
}

export interface CpuTicks {
  /** The process's own user + system time. */
  self: number;
  /** User + system time of its children that exited and were waited for (an exec probe's /bin/true). */
  children: number;
}

/** /proc/<pid>/stat fields 14–17 (utime, stime, cutime, cstime), after the parenthesised command name. */
export function cpuTicks(pid: number): CpuTicks {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return { self: Number(rest[11]) + Number(rest[12]), children: Number(rest[13]) + Number(rest[14]) };
}

/** Voluntary context switches of the main thread (each one the event loop blocking and being woken), and of all threads. */
export function contextSwitches(pid: number): { main: number; all: number } {
  const main = procField(readFileSync(`/proc/${pid}/task/${pid}/status`, 'utf8'), 'voluntary_ctxt_switches');
  let all = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      all += procField(readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8'), 'voluntary_ctxt_switches');
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return { main, all };
}

/** Resident set now and its peak so far, in kB. */
export function memoryKb(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { rss: procField(status, 'VmRSS'), hwm: procField(status, 'VmHWM') };
}

/**
 * Nanoseconds on a CPU so far, summed over the process's threads (the first
 * field of each /proc/<pid>/task/<tid>/schedstat): the 10 ms ticks of
 * /proc/<pid>/stat are too coarse for an idle process.
 */
export function onCpuNs(pid: number): number {
  let ns = 0;
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      ns += Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return ns;
}
