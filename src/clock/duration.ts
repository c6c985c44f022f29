/**
 * "12 s", "4 min", "3 h", "9 days": the unit a person would say. Coarse on
 * purpose: an operator reads "3 min", not "187 s". The one formatter of the
 * log, /status details, the STATUS= line and the `status` command.
 */
export function formatDuration(secs: number): string {
  const s = Math.max(0, Math.floor(secs));
  if (s < 120) return `${s} s`;
  if (s < 2 * 3600) return `${Math.floor(s / 60)} min`;
  if (s < 2 * 86_400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} days`;
}
