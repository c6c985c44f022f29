export const TLS_IDENTITY = Symbol('TLS_IDENTITY');

/** Error code of a connection that did not finish its TLS handshake within the connect timeout. */
export const CONNECT_TIMEOUT_CODE = 'ECONNECTTIMEOUT';

/**
 * Connections event delivery may hold to the CP at once, in a pool of its
 * own: the most events in flight at a time (one per rollout, PROTOCOL §6).
 */
export const DELIVERY_CONNECTIONS = 4;
