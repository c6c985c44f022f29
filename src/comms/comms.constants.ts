export const TLS_IDENTITY = Symbol('TLS_IDENTITY');

/** Error code of a connection that did not finish its TLS handshake within the connect timeout. */
export const CONNECT_TIMEOUT_CODE = 'ECONNECTTIMEOUT';
