// DevID Station operator console: what every page shares — building elements, times, the
// viewer's role and the actions it may take (a reason is asked for each, then POSTed with the
// X-Console-Action header the station requires of every action).
"use strict";

const maxReason = 1024; // api.MaxReasonBytes

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  for (const c of children) e.append(c);
  return e;
}

// seconds formats a duration in ms: "340 ms", "4.2s", "12s", "3m05s".
function seconds(ms) {
  ms = Math.max(0, ms);
  if (ms < 1000) return Math.round(ms) + " ms";
  if (ms < 10000) return (ms / 1000).toFixed(1) + "s";
  const s = Math.round(ms / 1000);
  return s < 60 ? s + "s" : Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(r.status + " " + (await r.text()).trim());
  return r.json();
}

// me is the viewer: {role, actions}; a wall display has no role and no action.
let me = { role: "", actions: [] };
const meLoaded = getJSON("/api/me").then(m => { me = m; showRole(); }).catch(() => {});

function may(action) { return me.actions.includes(action); }

function showRole() {
  const r = document.getElementById("role");
  if (r) r.textContent = me.role ? "signed in as " + me.role : "wall display (read-only)";
}

// act asks for a reason in the action dialog and posts it; done() runs after success.
function act(action, path, what, done) {
  const dlg = document.getElementById("action");
  const form = dlg.querySelector("form");
  dlg.querySelector("h2").textContent = what;
  const reason = dlg.querySelector("textarea");
  reason.value = "";
  reason.maxLength = maxReason;
  const err = dlg.querySelector(".error");
  err.textContent = "";
  form.onsubmit = async e => {
    e.preventDefault();
    if (e.submitter && e.submitter.value === "cancel") { dlg.close(); return; }
    const text = reason.value.trim();
    if (!text) { err.textContent = "a reason is required"; return; }
    const r = await fetch(path, {
      method: "POST", headers: { "Content-Type": "application/json", "X-Console-Action": action },
      body: JSON.stringify({ reason: text }),
    });
    if (!r.ok) { err.textContent = r.status + ": " + (await r.text()).trim(); return; }
    dlg.close();
    if (done) done();
  };
  dlg.showModal();
  reason.focus();
}

// actionButton is a button for action when the viewer may take it, else nothing.
function actionButton(action, label, path, what, done) {
  if (!may(action)) return "";
  const b = el("button", { className: "action " + action, textContent: label, type: "button" });
  b.dataset.action = action;
  b.onclick = () => act(action, path, what, done);
  return b;
}
