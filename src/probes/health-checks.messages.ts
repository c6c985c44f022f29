import type { ProbeMode } from '../protocol/rollout';
import { HEALTH_CHECKS_FILE_PROBE } from './probe.types';

// The problem lines of a health-checks file: one line per bad file or entry,
// naming the file, the probe and the fields, and what the agent does about it.

/** The file as a whole could not be used. */
export function fileProblem(file: string, what: string): string {
  return `health-checks file ${file}: ${what}; none of its probes runs: the agent declares one failing enforce probe "${HEALTH_CHECKS_FILE_PROBE}" instead`;
}

/** One field's clause: `field "port": must be … (got "5432")`. */
export function fieldClause(field: string, what: string, value?: unknown): string {
  return value === undefined ? `field "${field}": ${what}` : `field "${field}": ${what} (got ${shownValue(value)})`;
}

/** An entry that is declared under its own name but cannot run as written. */
export function entryProblem(file: string, name: string, clauses: readonly string[], mode: ProbeMode): string {
  return `health-checks file ${file}, probe ${shownName(name)}, ${clauses.join('; ')}; the probe ${refusedAs(mode)}`;
}

/** An entry whose name cannot be used: declared under `declaredAs` instead, always enforce (nothing of it can be trusted). */
export function renamedEntryProblem(file: string, position: number, name: string, clauses: readonly string[], declaredAs: string): string {
  return `health-checks file ${file}, entry ${position} (probe name ${shownName(name)}), ${clauses.join('; ')}; the entry is declared as "${declaredAs}", a failing enforce probe`;
}

/** What a refused declaration becomes, by the mode it asked for (see invalidDeclaration). */
function refusedAs(mode: ProbeMode): string {
  switch (mode) {
    case 'enforce':
      return 'counts as a failing enforce probe';
    case 'observe':
      return 'counts as a failing observe probe (reported, never gates)';
    case 'disabled':
      return 'is declared disabled, as it asked, and not run';
    default: {
      const never: never = mode;
      return never;
    }
  }
}

const SHOWN_MAX = 60;

/** A value from the file as a line shows it: JSON, cut when long. */
export function shownValue(value: unknown): string {
  if (value === undefined) return 'nothing';
  // JSON.stringify gives undefined only for what JSON.parse never yields (functions, symbols).
  const text = JSON.stringify(value) ?? typeof value;
  return cut(text, SHOWN_MAX);
}

/** A probe name as a line shows it: quoted, control characters escaped, cut when long. */
export function shownName(name: string): string {
  return cut(JSON.stringify(name), SHOWN_MAX);
}

function cut(text: string, max: number): string {
  const points = Array.from(text);
  return points.length <= max ? text : `${points.slice(0, max - 1).join('')}…`;
}
