// DevID Station operator console: one unit — its facts, step timeline, certificates and
// printable traveler, and the actions the viewer may take on it.
"use strict";

const serial = new URLSearchParams(location.search).get("serial") || "";

function fact(k, v) { return v ? [el("dt", { textContent: k }), el("dd", { textContent: String(v) })] : []; }

async function load() {
  document.getElementById("serial").textContent = "Unit " + serial;
  let v;
  try {
    v = await getJSON("/api/units/" + encodeURIComponent(serial));
  } catch (e) {
    document.getElementById("facts").replaceChildren(el("dd", { className: "error", textContent: e.message }));
    return;
  }
  await meLoaded;
  const u = v.unit, t = v.traveler;
  document.getElementById("station").textContent = t.station_id || "";
  document.getElementById("facts").replaceChildren(...[
    ["status", (u.status || "").replace("UNIT_STATUS_", "").toLowerCase()], ["step", u.step],
    ["work order", u.work_order], ["profile", u.profile], ["error", u.error_code && u.error_code + ": " + (u.error_message || "")],
    ["attempts", u.attempts], ["fixture slot", u.fixture_slot],
    ["started", t.started_at && new Date(t.started_at).toLocaleString()],
    ["cycle time", t.cycle_time_seconds && t.cycle_time_seconds.toFixed(1) + " s"],
    ["TPM", t.tpm && [t.tpm.vendor_string, t.tpm.firmware_version].filter(Boolean).join(" ")],
  ].flatMap(([k, x]) => fact(k, x)));

  const ended = ["UNIT_STATUS_DONE", "UNIT_STATUS_FAILED"].includes(u.status);
  document.getElementById("actions").replaceChildren(
    ended ? "" : actionButton("abort", "Abort unit", "/api/units/" + encodeURIComponent(serial) + "/abort", "Abort " + serial, load),
    ended ? actionButton("rework", "Authorize rework", "/api/units/" + encodeURIComponent(serial) + "/rework", "Authorize rework of " + serial, load) : "");

  // The timeline: one bar per step attempt on a common time axis.
  const steps = t.steps || [];
  const t0 = Math.min(...steps.map(s => Date.parse(s.started_at)));
  const end = s => s.ended_at ? Date.parse(s.ended_at) : Date.now();
  const span = Math.max(1, Math.max(...steps.map(end)) - t0);
  document.getElementById("timeline").replaceChildren(...steps.map(s => {
    const bar = el("div", { className: "span" + (s.error_code ? " bad" : s.ended_at ? "" : " running") });
    bar.style.marginLeft = (100 * (Date.parse(s.started_at) - t0) / span) + "%";
    bar.style.width = Math.max(0.5, 100 * (end(s) - Date.parse(s.started_at)) / span) + "%";
    return el("div", { className: "row" },
      el("span", { className: "name", textContent: s.name + (s.attempt > 1 ? " #" + s.attempt : "") }),
      el("div", { className: "track" }, bar),
      el("span", { className: "dur", textContent: s.ended_at ? seconds(s.duration_ms || 0) : "running" }),
      el("span", { className: "code", textContent: s.error_code || "" }));
  }));
  if (steps.length === 0) document.getElementById("timeline").append(el("p", { className: "empty", textContent: "no step yet" }));

  const certs = [["IDevID", t.idevid], ["LDevID", t.ldevid]].filter(([, c]) => c);
  if (t.ek) certs.unshift(["EK", t.ek]);
  document.querySelector("#certs tbody").replaceChildren(...certs.map(([role, c]) => el("tr", {},
    el("td", { textContent: role }), el("td", { textContent: c.subject }), el("td", { textContent: c.issuer }),
    el("td", { className: "mono", textContent: c.serial_number }),
    el("td", { textContent: c.not_after ? new Date(c.not_after).toLocaleDateString() : "" }),
    el("td", { className: "mono", textContent: (c.sha256 || "").slice(0, 16) + "…", title: c.sha256 || "" }))));
  if (certs.length === 0) document.querySelector("#certs tbody").append(el("tr", {}, el("td", { className: "empty", colSpan: 6, textContent: "none yet" })));

  const traveler = "/units/" + encodeURIComponent(serial) + "/traveler";
  document.getElementById("traveler-link").href = traveler;
  document.getElementById("traveler").src = traveler;
}

load();
