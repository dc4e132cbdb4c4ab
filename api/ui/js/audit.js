// The audit trail: chain and checkpoint verification (platform auditors and admins), and the latest entries.

import {ApiError, api} from "./api.js";
import {fill, h, table} from "./dom.js";

export async function auditView(main, context) {
  const status = h("section.card", {"aria-label": "Verification"}, h("h2", {}, "Hash chains and checkpoints"));
  const verify = async () => {
    fill(status, h("h2", {}, "Hash chains and checkpoints"), h("p", {}, "Verifying…"));
    try {
      const report = await api("/v1/audit/verify");
      fill(status, h("h2", {}, "Hash chains and checkpoints"),
        h("p.banner.ok", {id: "verify-status", role: "status"}, "Verified: every chain and checkpoint is intact."),
        h("dl.facts", {}, Object.entries(report).filter(([, v]) => typeof v !== "object")
          .map(([k, v]) => [h("dt", {}, k), h("dd", {}, String(v))])));
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      fill(status, h("h2", {}, "Hash chains and checkpoints"),
        h("p.banner.error", {id: "verify-status", role: "alert"}, error.problem.detail || error.message));
    }
  };
  const parts = [h("h1", {}, "Audit")];
  if (context.can.has("audit:verify")) {
    parts.push(status, h("button", {type: "button", on: {click: verify}}, "Verify again"));
  }
  const entries = h("section.card", {"aria-label": "Recent events"});
  parts.push(entries);
  fill(main, ...parts);
  if (context.can.has("audit:verify")) await verify();
  if (!context.can.has("audit:read")) return fill(entries, h("p.muted", {}, "Reading the audit log needs audit:read."));
  const load = async signal => {
    const page = await api("/v1/audit/events", {query: {tenant_id: context.session.tenant_id ? null : context.tenant,
                                                        limit: 50}, signal});
    fill(entries, h("h2", {}, "Audit events"), table([
      ["Position", e => String(e.position)], ["Type", e => e.type], ["Stream", e => e.stream_id],
      ["Actor", e => e.actor], ["When", e => e.occurred_at]], page.items));
  };
  await load();
  context.onEvent((_message, signal) => load(signal));
}
