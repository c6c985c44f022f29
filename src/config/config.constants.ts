export const AGENT_CONFIG = Symbol('AGENT_CONFIG');

/**
 * The settings file read when neither --config nor NIXFLEET_AGENT_CONFIG is
 * given and it exists: the one deploy/systemd's unit runs with, so that
 * `nixfleet-agent status` on the host finds the agent the unit runs.
 */
export const DEFAULT_CONFIG_PATH = '/etc/nixfleet-agent.json';
