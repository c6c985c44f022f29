import { EventEmitter } from 'node:events';
import { CapturingLogger } from '../../test/support/agent-harness';
import { EARLY_SIGHUP_LINE, holdReloadSignal } from './reload-signal';

describe('holdReloadSignal', () => {
  it('listens at once: a SIGHUP before the reload is handed over is logged, not fatal', () => {
    const source = new EventEmitter();
    const logger = new CapturingLogger();
    holdReloadSignal(logger, source);

    expect(source.listenerCount('SIGHUP')).toBe(1);
    source.emit('SIGHUP');
    expect(logger.entries).toEqual([{ level: 'log', message: EARLY_SIGHUP_LINE, context: 'Reload' }]);
  });

  it('once the reload is handed over, each SIGHUP runs it and says nothing of start-up; still one listener', () => {
    const source = new EventEmitter();
    const logger = new CapturingLogger();
    const signal = holdReloadSignal(logger, source);
    let reloads = 0;

    source.emit('SIGHUP');
    signal.reloadWith(() => {
      reloads += 1;
    });
    source.emit('SIGHUP');
    source.emit('SIGHUP');

    expect(reloads).toBe(2);
    expect(logger.entries.map((e) => e.message)).toEqual([EARLY_SIGHUP_LINE]);
    expect(source.listenerCount('SIGHUP')).toBe(1);
  });
});
