// class-transformer reads design-time metadata, also outside Nest (the dev CP, scripts).
import 'reflect-metadata';
import { plainToInstance, type ClassConstructor } from 'class-transformer';
import { validateSync, type ValidationError } from '../common/class-validator';

export type WireResult<T> = { ok: true; value: T } | { ok: false; problems: string[] };

export interface WireOptions {
  /**
   * Every key must be one the class declares, at every depth: for a document
   * whose every key is part of a contract. A body from the CP is not exact:
   * the protocol lets it grow.
   */
  exact?: boolean;
}

/**
 * Validates a body that came off the wire against its class. Problems name
 * the offending key path (e.g. `bootstrap_rollouts[0].state`) so a warning
 * can say which field was bad.
 */
export function validateWire<T extends object>(
  cls: ClassConstructor<T>,
  plain: unknown,
  path = '',
  options: WireOptions = {},
): WireResult<T> {
  if (typeof plain !== 'object' || plain === null || Array.isArray(plain)) {
    return { ok: false, problems: [`${path || 'body'}: expected a JSON object, got ${describe(plain)}`] };
  }
  const instance = plainToInstance(cls, plain);
  const errors = validateSync(
    instance,
    options.exact ? { forbidUnknownValues: false, whitelist: true, forbidNonWhitelisted: true } : { forbidUnknownValues: false },
  );
  if (errors.length === 0) return { ok: true, value: instance };
  return { ok: false, problems: flatten(errors, path) };
}

function flatten(errors: ValidationError[], prefix: string): string[] {
  const out: string[] = [];
  for (const e of errors) {
    const key = prefix ? `${prefix}.${e.property}` : e.property;
    if (e.constraints) {
      out.push(`${key}: ${Object.values(e.constraints).join('; ')} (got ${describe(e.value)})`);
    }
    if (e.children?.length) out.push(...flatten(e.children, key));
  }
  return out;
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'object') return 'an object';
  const text = JSON.stringify(v);
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}
