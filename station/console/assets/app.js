// DevID Station operator console: the line view. It reads /api/line and refreshes it when
// the station's event stream (/api/events, Server-Sent Events) says something happened.
"use strict";

const slowAfterSeconds = 120; // a tile turns amber after this long in one step
let line = null;              // the last /api/line answer
let skew = 0;                 // station clock minus browser clock, ms
let pending = false;

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

function seconds(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  return s < 60 ? s + "s" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
}

async function refresh() {
  if (pending) return;
  pending = true;
  try {
    const r = await fetch("/api/line", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + (await r.text()));
    line = await r.json();
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
  for (const u of line.units) {
    const inStep = now - Date.parse(u.update_time || line.now);
    const total = now - Date.parse(u.start_time || line.now);
    const i = line.steps.indexOf(u.step);
    const pct = i < 0 ? 0 : Math.round(100 * (i + 1) / line.steps.length);
    const fill = el("div");
    fill.style.width = pct + "%";
    const tile = el("div", { className: "tile" + (inStep > slowAfterSeconds * 1000 ? " slow" : "") },
      el("div", { className: "serial", textContent: u.serial }),
      el("div", { className: "step", textContent: (u.step || "-") + (i < 0 ? "" : " (" + (i + 1) + "/" + line.steps.length + ")") }),
      el("div", { className: "bar" }, fill),
      el("div", { className: "times", textContent: "in step " + seconds(inStep) + " · total " + seconds(total) }));
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
  ];
  document.getElementById("counters").replaceChildren(...counters.flatMap(([k, v]) =>
    [el("dt", { textContent: k }), el("dd", { textContent: String(v) })]));

  const body = document.querySelector("#cas tbody");
  body.replaceChildren(...(st.cas || []).map(c => el("tr", {},
    el("td", { textContent: c.name }), el("td", { className: c.breaker, textContent: c.breaker }),
    el("td", { textContent: c.requests || 0 }), el("td", { textContent: c.errors || 0 }),
    el("td", { textContent: (c.p50_ms || 0).toFixed(0) + " ms" }), el("td", { textContent: (c.p95_ms || 0).toFixed(0) + " ms" }))));
}

function failed(ev) {
  const list = document.getElementById("failures");
  list.querySelector(".empty")?.remove();
  list.prepend(el("li", {},
    el("span", { className: "code", textContent: ev.error_code || "failed" }), " " + (ev.serial || "") +
    (ev.step ? " at " + ev.step : "") + " · " + new Date(ev.time).toLocaleTimeString()));
  while (list.children.length > 10) list.lastChild.remove();
}

function connect() {
  const live = document.getElementById("live");
  const es = new EventSource("/api/events");
  es.onopen = () => { live.textContent = "live"; live.className = "live"; refresh(); };
  es.onerror = () => { live.textContent = "reconnecting"; live.className = "live off"; };
  es.addEventListener("station", m => {
    const ev = JSON.parse(m.data);
    if (ev.kind === "unit.failed") failed(ev);
    refresh();
  });
}

refresh();
connect();
setInterval(render, 1000);      // elapsed times tick between events
setInterval(refresh, 15000);    // and a full refresh now and then
