import { type BeforeApplicationShutdown, Injectable, type OnApplicationBootstrap } from '@nestjs/common';
import { Test } from '@nestjs/testing';
import { EffectPortRegistry, serveEffectPort } from './effect-ports';
import { FIRE_ROLLBACK_PORT, FIRE_SWITCH_PORT, type FireRollbackPort, type FireSwitchPort } from './reducer.ports';

/** Serves two ports, as ActivationService does, and counts its lifecycle hooks. */
@Injectable()
class TwoPorts implements FireSwitchPort, FireRollbackPort, OnApplicationBootstrap, BeforeApplicationShutdown {
  bootstraps = 0;
  shutdowns = 0;
  handled = 0;

  handle(): void {
    this.handled += 1;
  }

  onApplicationBootstrap(): void {
    this.bootstraps += 1;
  }

  beforeApplicationShutdown(): void {
    this.shutdowns += 1;
  }
}

describe('serveEffectPort', () => {
  it("binds one instance under two ports, and Nest runs that instance's lifecycle hooks once, not once per port", async () => {
    const module = await Test.createTestingModule({
      providers: [EffectPortRegistry, TwoPorts, serveEffectPort('FireSwitch', TwoPorts), serveEffectPort('FireRollback', TwoPorts)],
    }).compile();
    await module.init();
    const served = module.get(TwoPorts);

    const registry = module.get(EffectPortRegistry);
    expect(registry.port('FireSwitch')).toBe(served);
    expect(registry.port('FireRollback')).toBe(served);
    // The tokens give the port's method, not the instance: Nest would run the instance's hooks once more per token.
    expect(module.get(FIRE_SWITCH_PORT)).not.toBe(served);
    expect(module.get(FIRE_ROLLBACK_PORT)).not.toBe(served);
    await module
      .get<FireSwitchPort>(FIRE_SWITCH_PORT)
      .handle({ type: 'FireSwitch', rolloutId: 'stable@a1b2c3d4', targetClosure: `${'b'.repeat(32)}-nixos-system-web-01` });
    expect(served.handled).toBe(1);
    expect(served.bootstraps).toBe(1);

    await module.close();
    expect(served.shutdowns).toBe(1);
  });
});
