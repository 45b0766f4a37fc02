// One site: its row, a chart of the last hours from the collector's in-memory history, agents, worst miners.
"use strict";

const SITE = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const SVG = "http://www.w3.org/2000/svg"; // the SVG namespace name, not a request
const series = { t: [] };
let capacity = 4320;
let historyBusy = false;

function s(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

function niceStep(span) {
  const raw = span / 4, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((x) => x >= raw);
}

function path(xs, ys, x, y) {
  let d = "", pen = false;
  for (let i = 0; i < xs.length; i++) {
    if (ys[i] === null) { pen = false; continue; }
    d += (pen ? "L" : "M") + x(xs[i]).toFixed(1) + " " + y(ys[i]).toFixed(1);
    pen = true;
  }
  return d;
}

function drawChart() {
  const box = document.getElementById("chart");
  const t = series.t;
  if (t.length < 2) {
    box.replaceChildren(h("p", { class: "muted", text: "Collecting: " + t.length + " point(s) so far, one per collector cycle." }));
    return;
  }
  // Nothing is measured while a site is dark or stale: the measured area breaks there rather than show 0.
  const measured = series.facility_measured_w.map((v, i) => (UNMEASURED.has(series.status[i]) ? null : v));
  const lines = [
    ["allocation_w", series.allocation_w, "#111827", "6 4"],
    ["meter_w", series.meter_w, "#047857", null],
    ["facility_power_w", series.facility_power_w, "#b91c1c", null],
  ];
  const W = 800, H = 260, L = 64, R = 10, T = 10, B = 26;
  const values = [...lines.flatMap((l) => l[1]), ...measured].filter((v) => v !== null);
  const top = Math.max(1, ...values) * 1.1;
  const unit = top >= MW ? [MW, "MW"] : top >= 1e3 ? [1e3, "kW"] : [1, "W"];
  const step = niceStep(top / unit[0]) * unit[0];
  const digits = Math.max(0, -Math.floor(Math.log10(step / unit[0]) + 1e-9));
  const t0 = t[0], t1 = t[t.length - 1], seconds = t1 - t0 < 600;
  const x = (v) => L + ((v - t0) / Math.max(1, t1 - t0)) * (W - L - R);
  const y = (v) => T + (1 - v / top) * (H - T - B);
  const last = (a) => { for (let i = a.length - 1; i >= 0; i--) if (a[i] !== null) return a[i]; return null; };
  const known = series.facility_power_w.filter((v) => v !== null);
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": `${t.length} cycles from ${clock(t0, seconds)} to ${clock(t1, seconds)}: figure now ${mw(last(series.facility_power_w))}, ` +
      `peak ${known.length ? mw(Math.max(...known)) : "unknown"}, allocation ${mw(last(series.allocation_w))}` });
  for (let v = 0; v <= top; v += step) {
    svg.append(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e5e7eb" }));
    const label = s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", "font-size": 12, fill: "#4b5563" });
    label.textContent = (v / unit[0]).toFixed(digits) + " " + unit[1];
    svg.append(label);
  }
  for (let k = 0; k <= 4; k++) {
    const tv = t0 + ((t1 - t0) * k) / 4;
    const label = s("text", { x: x(tv), y: H - 6, "text-anchor": k === 0 ? "start" : k === 4 ? "end" : "middle", "font-size": 12, fill: "#4b5563" });
    label.textContent = clock(tv, seconds);
    svg.append(label);
  }
  // Measured as an area: the gap between it and the red figure is the allowance (or what only the meter sees).
  let area = "", run = [];
  const flush = () => {
    if (run.length > 1) area += "M" + x(t[run[0]]).toFixed(1) + " " + y(0).toFixed(1) +
      run.map((i) => "L" + x(t[i]).toFixed(1) + " " + y(measured[i]).toFixed(1)).join("") +
      "L" + x(t[run[run.length - 1]]).toFixed(1) + " " + y(0).toFixed(1) + "Z";
    run = [];
  };
  measured.forEach((v, i) => (v === null ? flush() : run.push(i)));
  flush();
  if (area) svg.append(s("path", { d: area, fill: "#93c5fd", "fill-opacity": 0.6, stroke: "none", "data-series": "facility_measured_w" }));
  for (const [name, ys, colour, dash] of lines) {
    const d = path(t, ys, x, y);
    if (!d) continue;
    const p = s("path", { d, fill: "none", stroke: colour, "stroke-width": 2, "data-series": name });
    if (dash) p.setAttribute("stroke-dasharray", dash);
    svg.append(p);
  }
  box.replaceChildren(svg);
  document.querySelector(".key-meter").hidden = !series.meter_w.some((v) => v !== null);
}

async function loadHistory() {
  if (historyBusy) return;
  historyBusy = true;
  try {
    const since = series.t.length ? "?since=" + series.t[series.t.length - 1] : "";
    const body = await getJSON("/api/v1/sites/" + encodeURIComponent(SITE) + "/history" + since, 10);
    capacity = body.capacity;
    const add = body.series;
    const last = series.t.length ? series.t[series.t.length - 1] : -Infinity;
    for (let i = 0; i < (add.t || []).length; i++) {
      if (add.t[i] <= last) continue;
      for (const [k, col] of Object.entries(add)) (series[k] = series[k] || []).push(col[i]);
    }
    for (const k of Object.keys(series)) if (series[k].length > capacity) series[k].splice(0, series[k].length - capacity);
    drawChart();
  } catch (err) {
    // The overview poll reports the collector's reachability; the chart keeps what it has.
  } finally {
    historyBusy = false;
  }
}

function renderAgents(agents) {
  const rows = agents.map((a) => h("tr", {},
    h("td", {}, h("a", { href: a.url + "/api/v1/summary", text: a.url })),
    h("td", { text: a.up ? (a.stale ? "up, data stale" : "up") : "down" + (a.down_since ? " since " + clock(a.down_since) : "") }),
    h("td", { class: "num", text: a.has_data ? ago(a.age_s) : "never answered" }),
    h("td", { text: a.last_error || "" })));
  document.querySelector("#agents tbody").replaceChildren(...rows);
}

async function loadMiners() {
  const note = document.getElementById("miners-note");
  note.textContent = "Asking the agents…";
  try {
    const body = await getJSON("/api/v1/sites/" + encodeURIComponent(SITE) + "/worst_miners", 15);
    const c = body.counts;
    const errors = Object.entries(body.errors).map(([agent, e]) => agent + ": " + e);
    note.textContent = `${c.down} down, ${c.stale} stale, ${c.hot} hot, ${c.implausible} implausible; ` +
      `${body.agents_answered} of ${body.agents} agents answered` + (errors.length ? " (" + errors.join("; ") + ")" : "") +
      (body.miners.length ? "" : ". Nothing to show.");
    const rows = body.miners.map((m) => h("tr", { "data-reason": m.reason },
      h("td", {}, h("strong", { text: m.miner }), h("br"), h("span", { class: "small muted", text: m.model || m.dialect || "" })),
      h("td", {}, h("span", { class: "badge " + (m.reason === "hot" || m.reason === "implausible" ? "partial" : "dark"), text: m.reason }),
        " ", m.last_error || (m.problems || []).join(", ")),
      h("td", { class: "num", text: m.power_w === null ? "unknown" : (m.power_w / 1000).toFixed(2) + " kW" }),
      h("td", { class: "num", text: m.chip_temp_max_c === null || m.chip_temp_max_c === undefined ? "unknown" : m.chip_temp_max_c.toFixed(0) + " °C" }),
      h("td", {}, h("a", { href: m.detail_url, text: "agent's view", "aria-label": "agent's view of " + m.miner }))));
    document.querySelector("#miners tbody").replaceChildren(...rows);
  } catch (err) {
    note.textContent = "Could not ask the agents: " + ((err && err.message) || err);
  }
}

function render(body) {
  const site = body.sites[0];
  if (!site) return;
  document.getElementById("site-name").textContent = site.name;
  document.title = "megawatch · " + site.name;
  replaceKeepingFocus(document.getElementById("sites"), [siteRow(site, false)]);
  renderAgents(site.agents || []);
  loadHistory();
}

document.getElementById("miners-refresh").addEventListener("click", loadMiners);
poll("/api/v1/overview?site=" + encodeURIComponent(SITE), render);
loadMiners();
