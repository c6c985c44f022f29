// Thresholds the agent (log, /status, metrics) and its `status` command both
// judge by: defined once, so that the two never disagree. Here rather than
// in a feature module because config (for --help) and the CLI import them,
// and neither may pull in a feature module.

/** A host clock this far off the CP's deserves a word: soak deadlines and certificate validity are wall-clock times. */
export const CLOCK_SKEW_WARN_SECS = 30;

/**
 * Under this many days to expiry the client certificate is a problem today:
 * the agent warns once a day, /status calls it failing, `status` exits degraded.
 */
export const CERT_EXPIRY_WARNING_DAYS = 7;
