/**
 * A module's part of `GET /status`: the top-level keys it owns, read afresh
 * at each request. Each feature module provides and exports one; the admin
 * module collects them (STATUS_CONTRIBUTORS in admin.module.ts), and the
 * document they make up is typed once, in src/admin/status.contract.ts.
 * Here rather than in admin/ because nothing imports admin.
 */
export interface StatusContributor<Part extends object = object> {
  statusPart(): Part | Promise<Part>;
}
