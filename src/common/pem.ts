/**
 * A PEM block (`-----BEGIN LABEL-----` … `-----END LABEL-----`, or to the end
 * when cut short), the label captured. Key material is found by it: the
 * logger and the diagnostics archive replace every match with `[LABEL redacted]`.
 */
export const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?(?:-----END \1-----|$)/g;

/** Every PEM block of `text` replaced by `[LABEL redacted]`: what reaches a terminal or the journal holds no key. */
export function redactPem(text: string): string {
  return text.replace(PEM_BLOCK, (_block, label: string) => `[${label} redacted]`);
}
