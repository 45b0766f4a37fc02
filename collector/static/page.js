// Shared by the fleet and site pages: polling, the page's own freshness, and one site's row.
// Unknown figures are null in the JSON and are shown as words, never as 0 MW.
"use strict";

const MW = 1e6;
const UNMEASURED = new Set(["dark", "stale", "no_data"]); // nothing measured now: the figure is all allowance
const STATUS_TEXT = { ok: "ok", partial: "partial", dark: "dark", stale: "stale", no_data: "no data" };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined && c !== false) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// MW for sites as they are; kW and W for small ones (a test bench, a single container), never "0.00 MW".
function mw(w) {
  if (w === null || w === undefined || !Number.isFinite(w)) return "unknown";
  const a = Math.abs(w);
  if (a >= MW) return (w / MW).toFixed(2) + " MW";
  if (a >= 1e3) return (w / 1e3).toFixed(1) + " kW";
  return w.toFixed(0) + " W";
}

function pct(r) {
  return r === null || r === undefined ? "unknown" : (r * 100).toFixed(1) + "%";
}

function ago(s) {
  if (s === null || s === undefined) return "unknown";
  s = Math.max(0, Math.round(s));
  if (s < 120) return s + " s";
  if (s < 7200) return Math.round(s / 60) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function clock(t, seconds) {
  return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: seconds ? "2-digit" : undefined, hour12: false });
}

function when(t) {
  const d = new Date(t * 1000), today = new Date().toDateString() === d.toDateString();
  return (today ? "" : d.toLocaleDateString([], { weekday: "short" }) + " ") + clock(t); // not today: which day
}

async function getJSON(url, timeoutS) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), timeoutS * 1000);
  try {
    const resp = await fetch(url, { signal: ctl.signal, cache: "no-store", credentials: "same-origin" });
    if (resp.status === 401) throw new Error("not signed in: reload the page to sign in");
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    return await resp.json();
  } finally {
    clearTimeout(timer);
  }
}

// How old what the page shows is, by the browser's monotonic clock (no skew with the collector's):
// the collector's data age when it answered, plus the time since that answer.
const Live = {
  state: "loading", okAt: null, ageAtOk: null, stallLimit: 45, error: "",
  ok(body) {
    this.okAt = performance.now();
    this.ageAtOk = body.at === null ? null : Math.max(0, body.served_at - body.at);
    this.stallLimit = body.stall_limit_s;
    this.error = "";
    this.render();
  },
  fail(err) {
    this.error = err && err.name === "AbortError" ? "no answer in time" : String((err && err.message) || err);
    this.render();
  },
  age() {
    return this.okAt === null || this.ageAtOk === null ? null : this.ageAtOk + (performance.now() - this.okAt) / 1000;
  },
  render() {
    const box = document.getElementById("conn");
    const age = this.age();
    let state, text;
    if (this.error) {
      state = "unreachable";
      text = "Collector unreachable (" + this.error + ")";
    } else if (this.okAt === null) {
      state = "loading"; text = "Loading…";
    } else if (this.ageAtOk === null) {
      state = "late"; text = "Waiting for the collector's first cycle";
    } else if (age > this.stallLimit) {
      state = "late"; text = "Collector's last cycle is late";
    } else {
      state = "live"; text = "Live";
    }
    if (state !== this.state || document.getElementById("conn-state").textContent !== text) {
      document.getElementById("conn-state").textContent = text; // aria-live: announced on change only
    }
    this.state = state;
    box.dataset.state = state;
    document.getElementById("conn-age").textContent = age === null ? "" : "· data " + ago(age) + " old";
    const stale = state === "unreachable" || state === "late";
    document.getElementById("main").dataset.stale = String(stale);
    const banner = document.getElementById("stale-banner");
    banner.hidden = !stale;
    banner.dataset.state = state;
    if (stale) {
      banner.textContent = text + ". " + (age === null ? "No figures yet." :
        "The figures below are " + ago(age) + " old and are not updating.");
    }
  },
};

function poll(url, onBody) {
  let refresh = 2;
  async function once() {
    try {
      const body = await getJSON(url, Math.max(4, 2 * refresh));
      refresh = body.refresh_s || refresh;
      Live.ok(body);
      onBody(body);
      // When the first figures were on screen: read by the bench (python -m bench.page).
      if (body.at !== null && !performance.getEntriesByName("megawatch:first-render").length) {
        performance.mark("megawatch:first-render");
      }
    } catch (err) {
      Live.fail(err);
    }
    setTimeout(once, refresh * 1000);
  }
  once();
  setInterval(() => Live.render(), 1000);
}

function figure(label, value, unknownText) {
  const unknown = value === null || value === undefined;
  return h("div", {}, h("dt", { text: label }), h("dd", { class: unknown ? "unknown" : null, text: unknown ? unknownText || "unknown" : value }));
}

function headline(s) {
  const alloc = mw(s.allocation_w);
  if (UNMEASURED.has(s.status)) {
    const what = s.status === "stale" ? "carried" : "allowance";
    return STATUS_TEXT[s.status] + " · up to " + mw(s.facility_power_w) + " (" + what + ") of " + alloc;
  }
  return mw(s.facility_power_w) + " of " + alloc + " (" + pct(s.utilisation_ratio) + ")";
}

function bar(s) {
  const full = 1.25 * s.allocation_w; // the allocation line always sits at 80%: bars compare at a glance
  const at = (w) => Math.max(0, Math.min(100, (100 * w) / full));
  const el = h("div", { class: "bar", role: "img", "aria-label": headline(s) });
  const measured = UNMEASURED.has(s.status) ? 0 : s.facility_measured_w || 0;
  const allowance = s.facility_allowance_w || 0;
  if (full > 0) {
    const m = h("div", { class: "seg measured" });
    m.style.left = "0%"; m.style.width = at(measured) + "%";
    const a = h("div", { class: "seg allowance" });
    a.style.left = at(measured) + "%"; a.style.width = Math.max(0, at(measured + allowance) - at(measured)) + "%";
    el.append(m, a);
    if (s.figure_source === "meter" && s.facility_power_w !== null) {
      const meter = h("div", { class: "meter", title: "meter" });
      meter.style.left = at(s.facility_power_w) + "%";
      el.append(meter);
    }
    const line = h("div", { class: "alloc", title: "allocation " + mw(s.allocation_w) });
    line.style.left = "80%";
    el.append(line);
    if (s.facility_power_w !== null && s.facility_power_w > full) el.append(h("span", { class: "beyond", text: "›" }));
  }
  return el;
}

// What curtailment has switched off and what its plan would do; nothing when the site's mode is off.
function curtailment(c) {
  if (!c || c.mode === "off") return null;
  const parts = [];
  if (c.curtailed) parts.push(c.curtailed + " off, " + mw(c.shed_w) + " shed");
  if (c.stops) parts.push((c.mode === "auto" ? "stopping " : "plan: stop ") + c.stops + ", " + mw(c.planned_w));
  if (c.restores) parts.push((c.mode === "auto" ? "restoring " : "plan: restore ") + c.restores);
  if (c.need_w > 0) parts.push(mw(c.need_w) + " still to shed");
  if (c.awaiting_approval) parts.push("awaiting approval");
  if (c.refused) parts.push(c.refused + " refused");
  if (!parts.length && c.mode === "plan") return null; // planning only, nothing to plan: no clutter
  const el = figure("Curtailment (" + c.mode + ")", parts.length ? parts.join("; ") : "nothing to do");
  el.className = "wide";
  return el;
}

function siteRow(s, link) {
  const ratio = s.utilisation_ratio;
  const name = link ? h("a", { class: "site-name", href: "/sites/" + encodeURIComponent(s.id), "data-key": "site-" + s.id, text: s.name })
    : h("span", { class: "site-name", text: s.name });
  const badges = [];
  if (ratio !== null && ratio > 1) {
    badges.push(h("span", { class: "badge over", text: "over by " + mw(s.facility_power_w - s.allocation_w) }));
  } else if (ratio !== null && ratio >= 0.95) {
    badges.push(h("span", { class: "badge near", text: "near allocation" }));
  }
  // The status says how much of the figure is measured: ok, partial, dark, stale, no data.
  badges.push(h("span", { class: "badge " + s.status, title: "data: " + (STATUS_TEXT[s.status] || s.status), text: STATUS_TEXT[s.status] || s.status }));
  const meter = s.meter || { state: "none" };
  const next = s.allocation_next_change;
  const unmeasured = UNMEASURED.has(s.status);
  const dl = h("dl", { class: "figures" },
    figure(s.figure_source === "meter" ? "Figure (meter)" : "Figure (upper bound)", s.facility_power_w === null ? null : mw(s.facility_power_w)),
    figure("Allocation", mw(s.allocation_w)),
    figure("Measured", unmeasured || s.facility_measured_w === null ? null : mw(s.facility_measured_w),
      "none (" + (STATUS_TEXT[s.status] || "unknown") + ")"),
    figure("Allowance", s.facility_allowance_w === null ? null : mw(s.facility_allowance_w)),
    figure("Upper bound", s.facility_upper_bound_w === null ? null : mw(s.facility_upper_bound_w)),
    meter.state !== "none" ? figure("Meter (" + meter.state + ")", meter.power_w === null ? null : mw(meter.power_w)) : null,
    next ? figure("Next change", mw(next.allocation_w) + " at " + when(next.at)) : null,
    figure("Miners up", s.miners_up === null ? null : s.miners_up + " of " + (s.miners_total === null ? "?" : s.miners_total)),
    s.agents_total !== undefined ? figure("Agents up", s.agents_up + " of " + s.agents_total) : null,
    curtailment(s.curtailment));
  const alerts = (s.alerts || []).map((a) => h("li", { class: a.severity }, h("strong", { text: a.alertname + ": " }), a.summary));
  return h("li", { class: "site", "data-site": s.id, "data-level": s.level, "data-status": s.status },
    h("div", { class: "site-head" }, name, ...badges, h("span", { class: "headline", text: headline(s) })),
    bar(s), dl, alerts.length ? h("ul", { class: "alerts", "aria-label": "Firing alerts" }, alerts) : null);
}

// Re-render a list while keeping keyboard focus on the same link.
function replaceKeepingFocus(parent, children) {
  const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.key : null;
  parent.replaceChildren(...children);
  if (key) {
    const again = parent.querySelector('[data-key="' + CSS.escape(key) + '"]');
    if (again) again.focus();
  }
}
