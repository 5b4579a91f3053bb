"""The status page served at ``/``: one self-contained HTML document (no external assets).

It opens ``events`` (server-sent events) and redraws the table from each message; the
uptimes tick locally between messages. Buttons post to ``api/ACTION/NAME`` with the token
the user typed (kept in this tab's sessionStorage, sent as ``Authorization: Bearer``).
All data is inserted with ``textContent``: a bot's description cannot inject markup.
"""

from __future__ import annotations

__all__ = ["PAGE"]

PAGE = b"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>trio-orch</title>
<style>
:root { color-scheme: light dark; --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --mute: #6e7781; }
body { font: 15px/1.4 system-ui, sans-serif; margin: 0; padding: 12px; }
header { display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline;
  margin-bottom: 10px; }
h1 { font-size: 20px; margin: 0; }
#live { color: var(--mute); font-size: 13px; }
#live.on::before { content: "\\25CF  "; color: var(--ok); }
#tokenbox { margin-left: auto; font-size: 13px; }
#tokenbox input { width: 11em; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 8px; border-bottom: 1px solid #8884; vertical-align: top; }
th { font-size: 12px; text-transform: uppercase; color: var(--mute); }
td.num { font-variant-numeric: tabular-nums; }
.state { font-weight: 600; }
.state[data-state=running] { color: var(--ok); }
.state[data-state=paused], .state[data-state=backoff], .state[data-state=starting],
.state[data-state=stopping] { color: var(--warn); }
.state[data-state=failed], .state[data-state=exited] { color: var(--bad); }
.state[data-state=stopped] { color: var(--mute); }
button { font: inherit; font-size: 13px; padding: 3px 8px; margin: 1px; }
pre.log { margin: 0; padding: 8px; max-height: 50vh; overflow: auto; font-size: 12px;
  background: #8882; white-space: pre-wrap; word-break: break-all; }
#message { min-height: 1.4em; font-size: 13px; }
#message.bad { color: var(--bad); }
@media (max-width: 700px) {
  thead { display: none; }
  table, tbody, tr, td { display: block; width: auto; }
  tr.bot { border: 1px solid #8886; border-radius: 8px; margin: 0 0 10px; padding: 4px 0; }
  td { border: 0; padding: 2px 10px; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--mute); font-size: 12px; }
  td.name { font-size: 17px; font-weight: 600; }
  tr.logrow td { padding: 0; }
}
</style>
</head>
<body>
<header>
  <h1>trio-orch</h1>
  <span id="live">connecting&hellip;</span>
  <label id="tokenbox" hidden>token <input id="token" type="password" autocomplete="off"></label>
</header>
<div id="message" role="status"></div>
<table>
  <thead><tr><th>Bot</th><th>State</th><th>Uptime</th><th>Restarts</th><th>CPU</th>
  <th>Memory</th><th>Last exit</th><th></th></tr></thead>
  <tbody id="bots"></tbody>
</table>
<script>
"use strict";
const tbody = document.getElementById("bots");
const live = document.getElementById("live");
const tokenInput = document.getElementById("token");
const messageBox = document.getElementById("message");
const openLogs = new Set();
let received = Date.now();
let last = null;
tokenInput.value = sessionStorage.getItem("trio-orch-token") || "";
tokenInput.addEventListener("input",
  () => sessionStorage.setItem("trio-orch-token", tokenInput.value));

function authHeaders() {
  return tokenInput.value ? {"Authorization": "Bearer " + tokenInput.value} : {};
}
function bytes(n) {
  if (n === null || n === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(n < 10 ? 1 : 0) : n) + " " + units[i];
}
function duration(s) {
  if (s === null || s === undefined) return "-";
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600), m = Math.floor(s % 3600 / 60);
  if (d) return d + "d" + String(h).padStart(2, "0") + "h";
  if (h) return h + "h" + String(m).padStart(2, "0") + "m";
  return m ? m + "m" + String(s % 60).padStart(2, "0") + "s" : s + "s";
}
function cell(row, label, cls) {
  const td = row.insertCell();
  if (label) td.dataset.label = label;
  if (cls) td.className = cls;
  return td;
}
function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}
function lastExit(bot) {
  if (bot.last_exit_reason) return bot.last_exit_reason;
  return bot.last_exit_code === null ? "-" : "code " + bot.last_exit_code;
}
async function act(action, name) {
  messageBox.className = "";
  messageBox.textContent = action + " " + name + "\\u2026";
  try {
    const r = await fetch("api/" + action + "/" + encodeURIComponent(name),
                          {method: "POST", headers: authHeaders()});
    const reply = await r.json();
    messageBox.className = reply.ok ? "" : "bad";
    messageBox.textContent = reply.message || (r.status + "");
  } catch (e) {
    messageBox.className = "bad";
    messageBox.textContent = action + " " + name + ": " + e;
  }
}
async function loadLog(name, pre) {
  try {
    const r = await fetch("api/logs/" + encodeURIComponent(name) + "?lines=50",
                          {headers: authHeaders()});
    pre.textContent = await r.text();
    pre.scrollTop = pre.scrollHeight;
  } catch (e) {
    pre.textContent = String(e);
  }
}
function toggleLog(name) {
  if (openLogs.has(name)) openLogs.delete(name); else openLogs.add(name);
  if (last) render(last);
}
function makeRow(name) {
  const row = document.createElement("tr");
  row.className = "bot";
  row.id = "bot-" + name;
  row.dataset.bot = name;
  row.cells_ = {
    name: cell(row, null, "name"), state: cell(row, "state", "state"),
    uptime: cell(row, "uptime", "num uptime"), restarts: cell(row, "restarts", "num"),
    cpu: cell(row, "cpu", "num"), memory: cell(row, "memory", "num"),
    exit: cell(row, "last exit"), actions: cell(row, null, "actions"),
  };
  row.cells_.name.textContent = name;
  const buttons = document.createElement("span");
  const logButton = document.createElement("button");
  logButton.addEventListener("click", () => toggleLog(name));
  row.cells_.actions.append(buttons, logButton);
  row.buttons_ = buttons;
  row.logButton_ = logButton;
  return row;
}
function verbsFor(state, actions) {
  if (!actions) return [];
  if (state === "paused") return ["resume", "stop"];
  if (state === "running") return ["restart", "pause", "stop"];
  if (state === "starting" || state === "stopping") return ["stop"];
  if (state === "backoff") return ["start", "stop"];
  return ["start"];
}
function updateRow(row, bot, actions) {
  const c = row.cells_;
  row.dataset.state = bot.state;
  c.name.title = bot.description || "";
  setText(c.state, bot.state);
  c.state.dataset.state = bot.state;
  setText(c.uptime, duration(bot.uptime));
  c.uptime.dataset.uptime = bot.uptime === null ? "" : bot.uptime;
  setText(c.restarts, String(bot.restarts));
  setText(c.cpu, bot.cpu_percent === null || bot.cpu_percent === undefined ? "-" :
          bot.cpu_percent.toFixed(1) + "%");
  setText(c.memory, bytes(bot.memory_bytes));
  setText(c.exit, lastExit(bot));
  const verbs = verbsFor(bot.state, actions);
  if (row.dataset.verbs !== verbs.join()) {
    row.dataset.verbs = verbs.join();
    row.buttons_.replaceChildren(...verbs.map((verb) => {
      const b = document.createElement("button");
      b.textContent = verb;
      b.dataset.action = verb;
      b.addEventListener("click", () => act(verb, bot.name));
      return b;
    }));
  }
  setText(row.logButton_, openLogs.has(bot.name) ? "hide log" : "log");
}
function render(doc) {
  last = doc;
  received = Date.now();
  document.getElementById("tokenbox").hidden = !doc.actions;
  const rows = [];
  for (const bot of doc.bots) {
    const row = document.getElementById("bot-" + bot.name) || makeRow(bot.name);
    updateRow(row, bot, doc.actions);
    rows.push(row);
    if (openLogs.has(bot.name)) {
      let logRow = document.getElementById("logrow-" + bot.name);
      if (!logRow) {
        logRow = document.createElement("tr");
        logRow.className = "logrow";
        logRow.id = "logrow-" + bot.name;
        const td = logRow.insertCell();
        td.colSpan = 8;
        const pre = document.createElement("pre");
        pre.className = "log";
        pre.id = "log-" + bot.name;
        pre.textContent = "\\u2026";
        td.appendChild(pre);
      }
      rows.push(logRow);
      loadLog(bot.name, logRow.querySelector("pre"));
    }
  }
  const current = Array.from(tbody.children);
  if (rows.length !== current.length || rows.some((row, i) => current[i] !== row)) {
    tbody.replaceChildren(...rows);
  }
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}
setInterval(() => {
  const elapsed = (Date.now() - received) / 1000;
  for (const td of document.querySelectorAll("td.uptime")) {
    if (td.dataset.uptime !== "") td.textContent = duration(Number(td.dataset.uptime) + elapsed);
  }
}, 1000);
const events = new EventSource("events");
events.onopen = () => { live.textContent = "live"; live.className = "on"; };
events.onmessage = (e) => render(JSON.parse(e.data));
events.onerror = () => { live.textContent = "reconnecting\\u2026"; live.className = ""; };
</script>
</body>
</html>
"""
