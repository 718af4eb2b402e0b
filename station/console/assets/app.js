// DevID Station operator console: the line view. It reads /api/line and refreshes it when
// the station's event stream (/api/events, Server-Sent Events) says something happened.
// Needs common.js.
"use strict";

const slowAfterSeconds = 120; // without a typical time, a tile turns amber after this long in one step
const slowFactor = 2;         // with one, after this many times the typical time
const slowMargin = 2000;      // and at least this many ms over it
let line = null;              // the last /api/line answer
let skew = 0;                 // station clock minus browser clock, ms
let pending = false;

async function refresh() {
  if (pending) return;
  pending = true;
  try {
    line = await getJSON("/api/line");
    skew = Date.parse(line.now) - Date.now();
    render();
  } catch (e) {
    document.getElementById("live").textContent = "station unreachable";
    document.getElementById("live").className = "live off";
  } finally {
    pending = false;
  }
}

function render() {
  if (!line) return;
  const st = line.status || {};
  document.getElementById("station").textContent = st.station_id || "";
  const now = Date.now() + skew;

  const tiles = document.getElementById("tiles");
  tiles.replaceChildren();
  if (line.units.length === 0) tiles.append(el("p", { className: "empty", textContent: "no unit in flight" }));
  const typical = line.typical_ms || {};
  for (const u of line.units) {
    const inStep = now - Date.parse(u.update_time || line.now);
    const total = now - Date.parse(u.start_time || line.now);
    const i = line.steps.indexOf(u.step);
    const pct = i < 0 ? 0 : Math.round(100 * (i + 1) / line.steps.length);
    const usual = typical[u.step];
    const slow = usual ? inStep > Math.max(slowFactor * usual, usual + slowMargin) : inStep > slowAfterSeconds * 1000;
    const fill = el("div");
    fill.style.width = pct + "%";
    const link = el("a", { className: "serial", textContent: u.serial, href: "/unit?serial=" + encodeURIComponent(u.serial) });
    const tile = el("div", { className: "tile" + (slow ? " slow" : "") },
      link,
      el("div", { className: "step", textContent: (u.step || "-") + (i < 0 ? "" : " (" + (i + 1) + "/" + line.steps.length + ")") }),
      el("div", { className: "bar" }, fill),
      el("div", { className: "times", textContent: "in step " + seconds(inStep) + (usual ? " / typ. " + seconds(usual) : "") + " · total " + seconds(total) }),
      actionButton("abort", "Abort", "/api/units/" + encodeURIComponent(u.serial) + "/abort", "Abort " + u.serial, refresh));
    tile.dataset.serial = u.serial;
    tile.dataset.step = u.step || "";
    tiles.append(tile);
  }

  const counters = [
    ["in flight", line.units.length],
    ["agents connected", st.agents_connected || 0],
    ["units/h", (st.units_per_hour || 0).toFixed(1) + " (" + (st.window_minutes || 0) + " min)"],
    ["done", st.units_done || 0],
    ["failed", st.units_failed || 0],
    ["yield", (() => { const d = Number(st.units_done || 0), f = Number(st.units_failed || 0); return d + f ? (100 * d / (d + f)).toFixed(1) + " %" : "-"; })()],
    ["cycle p50 / p95", line.cycle_p50_ms ? seconds(line.cycle_p50_ms) + " / " + seconds(line.cycle_p95_ms) : "-"],
  ];
  document.getElementById("counters").replaceChildren(...counters.flatMap(([k, v]) =>
    [el("dt", { textContent: k }), el("dd", { textContent: String(v) })]));

  renderFailures();

  const body = document.querySelector("#cas tbody");
  body.replaceChildren(...(st.cas || []).map(c => el("tr", {},
    el("td", { textContent: c.name }), el("td", { className: c.breaker, textContent: c.breaker }),
    el("td", { textContent: c.requests || 0 }), el("td", { textContent: c.errors || 0 }),
    el("td", { textContent: (c.p50_ms || 0).toFixed(0) + " ms" }), el("td", { textContent: (c.p95_ms || 0).toFixed(0) + " ms" }))));
}

// renderFailures lists the latest failed units, each with what the operator should do.
function renderFailures() {
  const list = document.getElementById("failures");
  const advice = line.advice || {};
  list.replaceChildren(...(line.failures || []).map(f => {
    const code = f.error_code || "FAILED";
    const item = el("li", {},
      el("span", { className: "code", textContent: code }), " ",
      el("a", { textContent: f.serial, href: "/unit?serial=" + encodeURIComponent(f.serial) }),
      (f.step ? " at " + f.step : "") + " · " + new Date(f.update_time).toLocaleTimeString(),
      el("div", { className: "todo", textContent: "→ " + (advice[code] || "open the unit and read its error; ask QA") }));
    item.dataset.code = code;
    return item;
  }));
  if (!list.children.length) list.append(el("li", { className: "empty", textContent: "none" }));
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.onopen = () => { live.textContent = "live"; live.className = "live"; refresh(); };
  es.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  es.addEventListener("station", () => {
    refresh();
  });
}

refresh();
connect();
meLoaded.then(render);
setInterval(render, 1000);      // elapsed times tick between events
setInterval(refresh, 15000);    // and a full refresh now and then
