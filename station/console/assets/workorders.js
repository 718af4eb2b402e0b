// DevID Station operator console: the work orders, each with its progress (units done, failed
// and in flight of its total), and closing one when the viewer may.
"use strict";

async function load() {
  let list;
  try {
    list = await getJSON("/api/workorders");
  } catch (e) {
    document.querySelector("#workorders tbody").replaceChildren(el("tr", {}, el("td", { className: "error", colSpan: 9, textContent: e.message })));
    return;
  }
  await meLoaded;
  const n = x => Number(x || 0);
  document.querySelector("#workorders tbody").replaceChildren(...list.map(({ work_order: w, in_flight }) => {
    const total = n(w.units_total), done = n(w.units_done), failed = n(w.units_failed);
    const bar = el("div", { className: "bar stacked" });
    for (const [cls, k] of [["done", done], ["failed", failed], ["flight", in_flight]]) {
      const seg = el("div", { className: cls });
      seg.style.width = (total ? 100 * k / total : 0) + "%";
      bar.append(seg);
    }
    const open = w.status === "WORK_ORDER_STATUS_OPEN";
    const row = el("tr", {},
      el("td", { textContent: w.id }), el("td", { textContent: w.profile }),
      el("td", { textContent: open ? "open" : "closed" }), el("td", {}, bar),
      el("td", { textContent: done }), el("td", { textContent: failed }), el("td", { textContent: in_flight }),
      el("td", { textContent: total }),
      el("td", {}, open ? actionButton("close", "Close", "/api/workorders/" + encodeURIComponent(w.id) + "/close", "Close work order " + w.id, load) : ""));
    row.dataset.workOrder = w.id;
    return row;
  }));
  if (list.length === 0) document.querySelector("#workorders tbody").append(el("tr", {}, el("td", { className: "empty", colSpan: 9, textContent: "no work order" })));
}

load();
setInterval(() => { if (!document.getElementById("action").open) load(); }, 5000);
