import { type FactoryProvider, Injectable, type InjectionToken } from '@nestjs/common';
import { EFFECT_PORT_TOKENS, type EffectPorts } from './reducer.ports';

/**
 * Where the reducer finds the port each effect leaves through.
 *
 * Activation both feeds the reducer (its outcomes are inputs) and serves two
 * of its effects (FireSwitch, FireRollback). Were the reducer to inject its
 * ports and activation to inject the reducer, that would be a provider cycle,
 * which Nest resolves by leaving the @Optional ports undefined: every switch
 * silently dropped. So the reducer owns this registry and imports no feature;
 * a module that serves a port imports ReducerModule and binds into it as its
 * providers are built (serveEffectPort). Every arrow points at the reducer.
 */
@Injectable()
export class EffectPortRegistry {
  private readonly bound: Partial<EffectPorts> = {};

  bind<K extends keyof EffectPorts>(kind: K, port: EffectPorts[K]): void {
    if (this.bound[kind] !== undefined) {
      throw new Error(`the reducer's ${kind} port is served twice; exactly one module may serve it`);
    }
    this.bound[kind] = port;
  }

  /** The port serving `kind`; undefined while no module serves it. */
  port<K extends keyof EffectPorts>(kind: K): EffectPorts[K] | undefined {
    return this.bound[kind];
  }
}

/**
 * A provider, for the serving module's `providers`, that binds `implementation`
 * (a provider of that module) as the reducer's `kind` port. It is also
 * provided under the port's token (EMIT_EVENT_PORT, FIRE_SWITCH_PORT, …).
 */
export function serveEffectPort<K extends keyof EffectPorts>(kind: K, implementation: InjectionToken): FactoryProvider<EffectPorts[K]> {
  return {
    provide: EFFECT_PORT_TOKENS[kind],
    inject: [EffectPortRegistry, implementation],
    useFactory: (registry: EffectPortRegistry, port: EffectPorts[K]) => {
      registry.bind(kind, port);
      return facadeOf(kind, port);
    },
  };
}

/**
 * The port's one method, bound, and nothing else. Were the token to resolve
 * to the serving instance itself, Nest would run that instance's lifecycle
 * hooks once more for each token: a service serving two ports bootstrapped
 * three times (three resumes of one interrupted activation).
 */
function facadeOf<K extends keyof EffectPorts>(kind: K, port: EffectPorts[K]): EffectPorts[K] {
  const method = kind === 'EmitEvent' ? 'emit' : 'handle';
  // Every port has exactly that one method (reducer.ports.ts); the cast only forgets which kind.
  const fn = (port as unknown as Record<string, (...args: unknown[]) => unknown>)[method];
  return Object.freeze({ [method]: fn.bind(port) }) as unknown as EffectPorts[K];
}
