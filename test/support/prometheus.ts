/** The shape parse-prometheus-text-format documents; the package ships no types. */
export interface PromSample {
  value?: string;
  labels?: Record<string, string>;
  buckets?: Record<string, string>;
  count?: string;
  sum?: string;
}

export interface PromFamily {
  name: string;
  help: string;
  type: string;
  metrics: PromSample[];
}

// eslint-disable-next-line @typescript-eslint/no-require-imports
export const parsePrometheusText = require('parse-prometheus-text-format') as (text: string) => PromFamily[];
