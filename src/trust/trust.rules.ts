// class-transformer reads design-time metadata, also outside Nest.
import 'reflect-metadata';
import { ValidateBy, type ValidationArguments, type ValidationError } from '../common/class-validator';

// Shared by the trust file and the rollout manifest: field rules with one
// message each, and how class-validator's errors become key paths.

/** A rule that leaves null and absent to IsDefined / IsOptional, so a missing field gets one message. */
export function Rule(
  name: string,
  test: (value: unknown, object: object) => boolean,
  message: string | ((value: unknown, object: object) => string),
): PropertyDecorator {
  return ValidateBy({
    name,
    validator: {
      validate: (value: unknown, args?: ValidationArguments) => value === undefined || value === null || test(value, args?.object ?? {}),
      defaultMessage: (args?: ValidationArguments) => (typeof message === 'string' ? message : message(args?.value, args?.object ?? {})),
    },
  });
}

export const REQUIRED = { message: 'is required' };

/** RFC 3339 date-time (a full date, a time and an offset); ISO 8601's other spellings are not. */
const RFC3339 = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$/i;

/** The instant of an RFC 3339 date-time, or null when the text is not one (Feb 30 and 25:00 included). */
export function parseRfc3339(text: string): Date | null {
  const m = RFC3339.exec(text);
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m.map(Number);
  if (mo < 1 || mo > 12 || d < 1 || d > daysIn(y, mo) || h > 23 || mi > 59 || s > 59) return null;
  const at = new Date(text.toUpperCase());
  return Number.isNaN(at.getTime()) ? null : at;
}

function daysIn(year: number, month: number): number {
  return new Date(Date.UTC(year, month, 0)).getUTCDate();
}

export function Rfc3339(): PropertyDecorator {
  return Rule(
    'rfc3339',
    (v) => typeof v === 'string' && parseRfc3339(v) !== null,
    'must be an RFC 3339 date-time with an offset, e.g. "2026-11-28T12:00:00Z"',
  );
}

export function Text(): PropertyDecorator {
  return Rule('text', (v) => typeof v === 'string' && v !== '', 'must be a non-empty string');
}

export function WholeNumber(min: number): PropertyDecorator {
  return Rule('wholeNumber', (v) => typeof v === 'number' && Number.isSafeInteger(v) && v >= min, `must be a whole number >= ${min}`);
}

export function Bool(): PropertyDecorator {
  return Rule('bool', (v) => typeof v === 'boolean', 'must be true or false');
}

export function JsonObject(): PropertyDecorator {
  return Rule('jsonObject', (v) => typeof v === 'object' && !Array.isArray(v), 'must be a JSON object');
}

export function JsonArray(): PropertyDecorator {
  return Rule('jsonArray', (v) => Array.isArray(v), 'must be a JSON array');
}

/**
 * class-validator's errors as `[path, message]` pairs, one per key path:
 * `ciReleaseKey.current.public`, `hostSet[2].targetClosure`. Several rules
 * broken by one key make one message.
 */
export function problemsOf(errors: readonly ValidationError[], prefix = ''): [string, string][] {
  const out: [string, string][] = [];
  for (const e of errors) {
    const key = /^\d+$/.test(e.property) ? `${prefix}[${e.property}]` : prefix ? `${prefix}.${e.property}` : e.property;
    const constraints = { ...e.constraints };
    // ValidateNested's own complaint repeats what JsonObject / JsonArray say.
    if (Object.keys(constraints).length > 1) delete constraints.nestedValidation;
    const messages = Object.entries(constraints).map(([name, text]) =>
      name === 'whitelistValidation' ? 'is not a known key (a misspelt key would be ignored, so none is)' : text,
    );
    if (messages.length > 0) {
      const text = messages.join('; ');
      out.push([key, text.includes('(got ') ? text : `${text} (got ${describeJson(e.value)})`]);
    }
    if (e.children?.length) out.push(...problemsOf(e.children, key));
  }
  return out;
}

/** A value as a problem line shows it: short, never a whole document. */
export function describeJson(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  const text = JSON.stringify(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
