// The fleet page: every site against its allocation, worst first (the collector sorts), live.
"use strict";

function renderFleet(body) {
  document.getElementById("fleet-name").textContent = body.fleet_name;
  document.title = "megawatch · " + body.fleet_name;
  const f = body.fleet;
  const box = document.getElementById("fleet-body");
  if (!f) {
    box.replaceChildren(h("p", { class: "muted", text: "Waiting for the collector's first cycle…" }));
    return;
  }
  const counts = {};
  for (const s of body.sites) counts[s.level] = (counts[s.level] || 0) + 1;
  const summary = ["critical", "unknown", "warning", "ok"].filter((l) => counts[l])
    .map((l) => counts[l] + " " + { critical: "over or critical", unknown: "unknown", warning: "warning", ok: "ok" }[l]).join(" · ");
  const fleetAlerts = body.fleet_alerts.map((a) => h("li", { class: a.severity }, h("strong", { text: a.alertname + ": " }), a.summary));
  box.replaceChildren(
    h("dl", { class: "figures" },
      figure("Figure (upper bound)", f.facility_power_w === null ? null : mw(f.facility_power_w)),
      figure("Allocation", mw(f.allocation_w) + " (" + pct(f.utilisation_ratio) + ")"),
      figure("Measured", f.facility_measured_w === null ? null : mw(f.facility_measured_w)),
      figure("Allowance", f.facility_allowance_w === null ? null : mw(f.facility_allowance_w)),
      figure("Sites", f.sites + (f.sites_stale ? " (" + f.sites_stale + " stale)" : "")),
      figure("Miners up", f.miners_up === null ? null : f.miners_up + " of " + f.miners_total)),
    h("p", { class: "small", text: summary }),
    ...(fleetAlerts.length ? [h("ul", { class: "alerts", "aria-label": "Fleet alerts" }, fleetAlerts)] : []));
}

function render(body) {
  renderFleet(body);
  replaceKeepingFocus(document.getElementById("sites"), body.sites.map((s) => siteRow(s, true)));
}

poll("/api/v1/overview", render);
