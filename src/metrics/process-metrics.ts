import { Gauge, type Registry } from 'prom-client';
import gc from 'prom-client/lib/metrics/gc';
import heapSizeAndUsed from 'prom-client/lib/metrics/heapSizeAndUsed';
import heapSpacesSizeAndUsed from 'prom-client/lib/metrics/heapSpacesSizeAndUsed';
import osMemoryHeap from 'prom-client/lib/metrics/osMemoryHeap';
import processCpuTotal from 'prom-client/lib/metrics/processCpuTotal';
import processHandles from 'prom-client/lib/metrics/processHandles';
import processMaxFileDescriptors from 'prom-client/lib/metrics/processMaxFileDescriptors';
import processOpenFileDescriptors from 'prom-client/lib/metrics/processOpenFileDescriptors';
import processRequests from 'prom-client/lib/metrics/processRequests';
import processResources from 'prom-client/lib/metrics/processResources';
import processStartTime from 'prom-client/lib/metrics/processStartTime';
import version from 'prom-client/lib/metrics/version';
import type { LoopDelaySampler, LoopLag } from './loop-delay.sampler';

/**
 * prom-client's default process metrics, under their standard names. Its
 * collectDefaultMetrics would also start an event-loop delay monitor of its
 * own, a second timer waking the process; so its collectors run one by one
 * here, all but that one, and the loop-lag gauges read the agent's one
 * LoopDelaySampler instead.
 */
export function registerProcessMetrics(registry: Registry, sampler: LoopDelaySampler): void {
  for (const collect of [
    processCpuTotal,
    processStartTime,
    osMemoryHeap,
    processOpenFileDescriptors,
    processMaxFileDescriptors,
    processResources,
    processHandles,
    processRequests,
    heapSizeAndUsed,
    heapSpacesSizeAndUsed,
    version,
    gc,
  ]) {
    collect(registry);
  }
  registerLoopLag(registry, sampler);
}

const LAG_GAUGES: readonly { key: keyof LoopLag; name: string; help: string }[] = [
  { key: 'min', name: 'nodejs_eventloop_lag_min_seconds', help: 'The minimum recorded event loop delay, since the agent started.' },
  { key: 'max', name: 'nodejs_eventloop_lag_max_seconds', help: 'The maximum recorded event loop delay, since the agent started.' },
  { key: 'mean', name: 'nodejs_eventloop_lag_mean_seconds', help: 'The mean of the recorded event loop delays, since the agent started.' },
  {
    key: 'stddev',
    name: 'nodejs_eventloop_lag_stddev_seconds',
    help: 'The standard deviation of the recorded event loop delays, since the agent started.',
  },
  {
    key: 'p50',
    name: 'nodejs_eventloop_lag_p50_seconds',
    help: 'The 50th percentile of the recorded event loop delays, since the agent started.',
  },
  {
    key: 'p90',
    name: 'nodejs_eventloop_lag_p90_seconds',
    help: 'The 90th percentile of the recorded event loop delays, since the agent started.',
  },
  {
    key: 'p99',
    name: 'nodejs_eventloop_lag_p99_seconds',
    help: 'The 99th percentile of the recorded event loop delays, since the agent started.',
  },
];

/**
 * prom-client's loop-lag gauges, from the shared sampler, as how late its
 * timer fired (prom-client shows the time between firings, which at a 1 s
 * resolution would read as a lag of a second). Over the whole record, not
 * since the previous scrape as prom-client has them: the sampler is never
 * reset (a reset would blind it for the second after every scrape).
 * `nodejs_eventloop_lag_seconds` is the lag at each scrape.
 */
function registerLoopLag(registry: Registry, sampler: LoopDelaySampler): void {
  // Registered first, as prom-client does: a scrape runs its collect before it reads the gauges below.
  new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers: [registry],
    collect() {
      // As prom-client measures it: how long a setImmediate queued at the scrape waits (shown at the next scrape).
      const start = process.hrtime.bigint();
      setImmediate(() => this.set(Number(process.hrtime.bigint() - start) / 1e9));
      const lag = sampler.lag();
      if (lag === null) return;
      for (const { key, gauge } of gauges) gauge.set(lag[key]);
    },
  });
  const gauges = LAG_GAUGES.map((g) => ({ key: g.key, gauge: new Gauge({ name: g.name, help: g.help, registers: [registry] }) }));
}
