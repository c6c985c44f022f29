// prom-client 15's default collectors, one module each (lib/metrics/*.js, untyped): what collectDefaultMetrics runs.
declare module 'prom-client/lib/metrics/*' {
  import type { Registry } from 'prom-client';

  const collector: (registry: Registry, config?: Record<string, unknown>) => void;
  export = collector;
}
