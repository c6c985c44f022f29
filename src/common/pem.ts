/**
 * A PEM block (`-----BEGIN LABEL-----` … `-----END LABEL-----`, or to the end
 * when cut short), the label captured. Key material is found by it: the
 * logger and the diagnostics archive replace every match with `[LABEL redacted]`.
 */
export const PEM_BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----[\s\S]*?(?:-----END \1-----|$)/g;
