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

/** One /metrics exposition, read by family name and labels. */
export class Scrape {
  private readonly families: Map<string, PromFamily>;

  constructor(text: string) {
    this.families = new Map(parsePrometheusText(text).map((f) => [f.name, f]));
  }

  has(name: string): boolean {
    return this.families.has(name);
  }

  family(name: string): PromFamily {
    const f = this.families.get(name);
    if (!f) throw new Error(`${name} is not in /metrics; it has ${[...this.families.keys()].join(', ')}`);
    return f;
  }

  /** The sample whose labels include `labels`. */
  value(name: string, labels: Record<string, string> = {}): number {
    const sample = this.family(name).metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v));
    if (sample?.value === undefined) throw new Error(`${name}${JSON.stringify(labels)} has no sample`);
    return Number(sample.value);
  }

  histogram(name: string): { count: number; sum: number; buckets: Record<string, number> } {
    const [h] = this.family(name).metrics;
    const buckets: Record<string, number> = {};
    for (const [le, n] of Object.entries(h.buckets ?? {})) buckets[le] = Number(n);
    return { count: Number(h.count), sum: Number(h.sum), buckets };
  }
}
