// The AIOS dashboard: projects, a live task board (each project's DAG), live agents, and charts
// from /v1/stats. Plain ES modules, no build step. The credential stays in sessionStorage.
import { startKafka } from "./kafka.js";
import { bars, dag, line } from "./render.js";

const $ = (sel) => document.querySelector(sel);
const state = { token: "", projects: new Map(), tasks: new Map(), agents: new Map(), forgetAfterS: 300, selected: null,
  series: { throughput: [], p95: [] }, ws: null, retry: 1000, taskWs: null };

function showError(text) { $("#error").textContent = text || ""; }

async function api(path, options = {}) {
  const r = await fetch(path, { ...options, headers: { Authorization: `Bearer ${state.token}`, ...(options.headers || {}) } });
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    const error = new Error(typeof body.detail === "string" ? body.detail : `${r.status} ${r.statusText}`);
    error.status = r.status;
    throw error;
  }
  return r.json();
}

// -- state updates ------------------------------------------------------------------------------
function upsertTask(project, entry) {
  const key = `${project}\u0000${entry.task_id}`;
  const old = state.tasks.get(key) || { depends_on: [], role: "", reason: "" };
  // A terminal result is final: a later (older) status snapshot must not move it back.
  const terminal = ["succeeded", "failed", "skipped", "cancelled"];
  const next = { ...old, ...entry, project_id: project };
  if (terminal.includes(old.state) && !terminal.includes(entry.state)) next.state = old.state;
  state.tasks.set(key, next);
  // Standalone tasks have no project status: their project is listed without one.
  if (!state.projects.has(project)) state.projects.set(project, { project_id: project, state: "tasks", percent_done: null });
}

function applyProject(p) {
  state.projects.set(p.project_id, { project_id: p.project_id, state: p.state, percent_done: p.percent_done });
  for (const t of p.tasks) upsertTask(p.project_id, t);
}

function applyEvent(e) {
  const d = e.data;
  if (e.type === "tasks") upsertTask(d.project_id, { task_id: d.task_id, role: d.role, state: "submitted", depends_on: d.depends_on });
  else if (e.type === "plans") d.tasks.forEach((t) => upsertTask(d.project_id, { task_id: t.task_id, role: t.role, state: "pending", depends_on: t.depends_on }));
  else if (e.type === "results") upsertTask(d.project_id, { task_id: d.task_id, role: d.role, state: d.status, reason: d.error || "" });
  else if (e.type === "attempts") upsertTask(d.project_id, { task_id: d.task_id, role: d.role, state: "running" });
  else if (e.type === "project-status") applyProject({ ...d, tasks: d.tasks.map((t) => ({ ...t })) });
  else if (e.type === "agents" && d.removed) state.agents.delete(d.agent_id);  // it stopped: its key was tombstoned
  else if (e.type === "agents") state.agents.set(d.agent_id, d);
  render();
}

// -- rendering ----------------------------------------------------------------------------------
let scheduled = false;
function render() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => { scheduled = false; renderProjects(); renderBoard(); renderAgents(); });
}

function renderProjects() {
  const items = [...state.projects.values()].sort((a, b) => a.project_id.localeCompare(b.project_id));
  $("#projects").replaceChildren(...items.map((p) => {
    const li = document.createElement("li");
    li.dataset.project = p.project_id;
    li.setAttribute("aria-selected", String(state.selected === p.project_id));
    const name = document.createElement("span");
    name.textContent = p.project_id;
    const meta = document.createElement("small");
    meta.textContent = p.percent_done === null ? "standalone tasks" : `${p.state} ${Math.round(p.percent_done)}%`;
    li.append(name, meta);
    li.addEventListener("click", () => { state.selected = state.selected === p.project_id ? null : p.project_id; render(); });
    return li;
  }));
}

function renderBoard() {
  const byProject = new Map();
  for (const t of state.tasks.values()) {
    if (state.selected && t.project_id !== state.selected) continue;
    (byProject.get(t.project_id) || byProject.set(t.project_id, []).get(t.project_id)).push(t);
  }
  $("#board").replaceChildren(...[...byProject.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([project, tasks]) => {
    const div = document.createElement("div");
    div.className = "project";
    div.dataset.project = project;
    const h = document.createElement("h3");
    h.textContent = project;
    div.append(h, dag(tasks.slice(-200)));
    return div;
  }));
}

// Silent for three heartbeats: shown as gone; silent for the API's forget_after_s: dropped.
function shownState(a, now) {
  const silent = now - new Date(a.timestamp).getTime();
  if (silent > state.forgetAfterS * 1000) return null;
  if (!["stopped", "failed"].includes(a.state) && silent > 3 * a.heartbeat_interval_ms) return "gone";
  return a.state;
}

function renderAgents() {
  const now = Date.now();
  const shown = [...state.agents.values()].map((a) => [a, shownState(a, now)]).filter(([, s]) => s !== null);
  $("#agents tbody").replaceChildren(...shown.map(([a, shownAs]) => {
    const tr = document.createElement("tr");
    for (const v of [a.agent_id, a.role, shownAs, a.in_flight.length]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.append(td);
    }
    return tr;
  }));
}

async function refreshStats() {
  let s;
  try {
    s = await api(`/v1/stats?since_s=3600`);
  } catch (e) {
    if (e.status !== 403 || !state.selected) return;
    s = await api(`/v1/stats?since_s=3600&project=${encodeURIComponent(state.selected)}`).catch(() => null);
    if (!s) return;
  }
  $("#stats-window").textContent = `last hour · ${s.results} results · success ${s.success_rate === null ? "n/a" : (s.success_rate * 100).toFixed(1) + "%"}`;
  state.series.throughput = [...state.series.throughput, s.tasks_per_min].slice(-60);
  line($("#chart-throughput"), state.series.throughput);
  bars($("#chart-latency"), [["p50", s.latency_ms.p50], ["p95", s.latency_ms.p95], ["p99", s.latency_ms.p99]]);
  bars($("#chart-cost"), s.cost.map((c) => [`${c.provider}:${c.model}`, c.cost_usd]));
}

// -- one task's answer, as it is written (live tokens), then its result --------------------------
function openTask(project, taskId) {
  if (state.taskWs) state.taskWs.onclose = null, state.taskWs.close();
  $("#task-panel").hidden = false;
  $("#task-id").textContent = `${project} / ${taskId}`;
  $("#task-state").textContent = "waiting for tokens…";
  $("#task-answer").textContent = "";
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const q = `types=tokens,results&project=${encodeURIComponent(project)}&task=${encodeURIComponent(taskId)}`;
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream?${q}&access_token=${encodeURIComponent(state.token)}`);
  state.taskWs = ws;
  let step = -1;
  ws.onmessage = (m) => {
    const e = JSON.parse(m.data), d = e.data;
    if (e.type === "tokens") {
      if (d.step !== step) { step = d.step; if (d.step > 0) $("#task-answer").textContent += "\n\n"; }
      $("#task-answer").textContent += d.text;  // appended in order: one partition per task
      $("#task-state").textContent = d.done ? `step ${d.step} done` : `writing (step ${d.step})…`;
    } else if (e.type === "results") {
      $("#task-state").textContent = d.status;
      $("#task-answer").textContent = d.output || d.error || "";
    }
  };
}

$("#board").addEventListener("click", (e) => {
  const node = e.target.closest(".node");
  const project = e.target.closest(".project");
  if (node && project) openTask(project.dataset.project, node.dataset.taskId);
});

// -- the live stream ----------------------------------------------------------------------------
function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const types = "plans,tasks,attempts,results,project-status,agents";
  const ws = new WebSocket(`${scheme}://${location.host}/v1/stream?types=${types}&access_token=${encodeURIComponent(state.token)}`);
  state.ws = ws;
  ws.onopen = () => { $("#conn").dataset.state = "live"; $("#conn").textContent = "live"; state.retry = 1000; };
  ws.onmessage = (m) => applyEvent(JSON.parse(m.data));
  ws.onclose = (e) => {
    $("#conn").dataset.state = "offline";
    $("#conn").textContent = `offline (${e.code})`;
    if (e.code === 4401 || e.code === 4403 || e.code === 4400) { showError(e.reason); return; }
    setTimeout(() => { load().catch((err) => showError(err.message)); }, state.retry);
    state.retry = Math.min(state.retry * 2, 15000);
  };
}

async function load() {
  showError("");
  const [{ projects }, { agents, forget_after_s }] = await Promise.all([api("/v1/projects"), api("/v1/agents")]);
  state.forgetAfterS = forget_after_s;
  for (const p of projects) state.projects.set(p.project_id, p);
  for (const a of agents) state.agents.set(a.agent_id, a);
  await Promise.all(projects.map(async (p) => applyProject(await api(`/v1/projects/${encodeURIComponent(p.project_id)}`))));
  render();
  if (state.ws) state.ws.onclose = null, state.ws.close();
  connect();
  refreshStats().catch(() => {});
  startKafka(api, state.token).catch((e) => showError(e.message));
}

function start(token) {
  state.token = token;
  sessionStorage.setItem("aios-token", token);
  load().catch((e) => showError(e.message));
}

// A key may come in the URL fragment (never sent to the server); it is moved to sessionStorage.
const fromHash = new URLSearchParams(location.hash.slice(1)).get("key");
if (fromHash) history.replaceState(null, "", location.pathname);
$("#login").addEventListener("submit", (e) => { e.preventDefault(); start($("#key").value.trim()); });
setInterval(() => { if (state.token) refreshStats().catch(() => {}); }, 5000);
setInterval(() => { if (state.token) renderAgents(); }, 5000);  // gone and forgotten agents age out
const saved = fromHash || sessionStorage.getItem("aios-token");
if (saved) start(saved);
