// The dashboard's Kafka view: topics (partitions, end offsets, rate), each consumer group's lag (per
// partition now, and the last hour as a chart), the DLQ as a live feed with replay (operators), and
// each agent's live tokens. Shown to credentials for every project ('*'); built with DOM calls only.
import { el } from "./render.js";

const $ = (sel) => document.querySelector(sel);
const COLORS = ["#2f80ed", "#eb5757", "#27ae60", "#f2994a", "#9b51e0", "#56ccf2", "#6fcf97", "#bb6bd9"];
const kv = { at: [], series: new Map(), windowMs: 3600_000, ws: null, feed: null, canReplay: false, letters: new Map(),
  tokens: new Map(), api: null, token: "" };

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (cls) td.className = cls;
  tr.append(td);
  return td;
}

// The first bytes as text when they are printable UTF-8, else as hex: the rule `aios dlq list` follows.
export function preview(bytes, limit = 64) {
  const head = bytes.slice(0, limit);
  for (let trim = 0; trim < 4; trim++) {
    let text;
    try { text = new TextDecoder("utf-8", { fatal: true }).decode(head.slice(0, head.length - trim)); } catch { continue; }
    if ([...text].every((c) => c === "\t" || c === "\n" || c === "\r" || !/[\p{C}\p{Zl}\p{Zp}]/u.test(c))) return [text, "text"];
    break;
  }
  return [[...head].map((b) => b.toString(16).padStart(2, "0")).join(" "), "hex"];
}

function fromBase64(text) {
  const raw = atob(text || "");
  return Uint8Array.from(raw, (c) => c.charCodeAt(0));
}

// -- topics and lag -----------------------------------------------------------------------------
function addSample(doc) {
  if (doc.at === null || kv.at[kv.at.length - 1] === doc.at) return;
  kv.at.push(doc.at);
  const seen = new Set();
  for (const g of doc.groups) {
    if (!kv.series.has(g.group)) kv.series.set(g.group, new Array(kv.at.length - 1).fill(null));
    kv.series.get(g.group).push(g.lag);
    seen.add(g.group);
  }
  for (const [group, values] of kv.series) if (!seen.has(group)) values.push(null);
  while (kv.at.length && kv.at[0] < doc.at - kv.windowMs) {
    kv.at.shift();
    for (const values of kv.series.values()) values.shift();
  }
}

function ago(ms) {
  return ms < 120_000 ? `${Math.round(ms / 1000)} s ago` : `${Math.round(ms / 60_000)} min ago`;
}

function renderLag() {
  const svg = $("#chart-lag");
  const all = [...kv.series.values()].flat().filter((v) => v !== null);
  const max = all.reduce((m, v) => Math.max(m, v), 0);
  const last = [...kv.series.values()].reduce((sum, v) => sum + (v[v.length - 1] || 0), 0);
  svg.dataset.peak = String(max);
  svg.dataset.last = String(last);
  svg.dataset.samples = String(kv.at.length);
  svg.replaceChildren(el("line", { class: "axis", x1: 30, y1: 100, x2: 295, y2: 100 }), el("text", { x: 0, y: 100 }, "0"),
    el("text", { x: 30, y: 114 }, kv.at.length ? ago(kv.at[kv.at.length - 1] - kv.at[0]) : ""),
    el("text", { x: 270, y: 114 }, "now"));
  if (max > 0) svg.append(el("text", { x: 0, y: 12 }, String(max)));
  const t0 = kv.at[0], span = Math.max(1, kv.at[kv.at.length - 1] - t0);
  const legend = $("#lag-legend");
  legend.replaceChildren();
  [...kv.series.entries()].sort(([a], [b]) => a.localeCompare(b)).forEach(([group, values], i) => {
    const color = COLORS[i % COLORS.length];
    const points = values.map((v, j) => v === null ? null : `${30 + ((kv.at[j] - t0) / span) * 265},${100 - (max ? (v / max) * 88 : 0)}`)
      .filter((p) => p !== null).join(" ");
    if (points) {
      const known = values.filter((v) => v !== null);
      const poly = el("polyline", { class: "line", points, "data-group": group,
        "data-peak": known.reduce((m, v) => Math.max(m, v), 0), "data-last": known[known.length - 1] });
      poly.style.stroke = color;  // CSSOM, not a style attribute: the CSP allows no inline styles
      svg.append(poly);
    }
    const li = document.createElement("li");
    li.style.color = color;
    li.textContent = `${group}: ${values[values.length - 1] ?? "–"}`;
    legend.append(li);
  });
}

function renderNow(doc) {
  $("#kafka-state").textContent = doc.error ? `sampling failed: ${doc.error}` : doc.at ? `sampled every ${doc.sample_s}s` : "waiting for the first sample…";
  $("#kafka-topics tbody").replaceChildren(...doc.topics.map((t) => {
    const tr = document.createElement("tr");
    tr.dataset.topic = t.topic;
    cell(tr, t.topic); cell(tr, t.partitions); cell(tr, t.end_offsets.join(" · ")); cell(tr, t.messages);
    cell(tr, t.rate_per_s === null ? "–" : t.rate_per_s.toFixed(1));
    return tr;
  }));
  $("#kafka-lag tbody").replaceChildren(...doc.groups.flatMap((g) => g.partitions.map((p) => {
    const tr = document.createElement("tr");
    tr.dataset.group = g.group;
    cell(tr, g.group); cell(tr, `${p.topic}[${p.partition}]`); cell(tr, p.committed); cell(tr, p.end); cell(tr, p.lag, "lag");
    return tr;
  })));
}

// -- the DLQ ------------------------------------------------------------------------------------
function addLetter(l) {
  if (kv.letters.has(l.id)) return;
  kv.letters.set(l.id, l);
  const tr = document.createElement("tr");
  tr.dataset.id = l.id;
  tr.dataset.reason = l.reason;
  cell(tr, new Date(l.timestamp).toISOString().replace("T", " ").slice(0, 19));
  cell(tr, `${l.source_topic}[${l.source_partition}]@${l.source_offset}`);
  cell(tr, l.processor);
  cell(tr, `${l.error_type}: ${l.reason}`, "reason");
  const bytes = cell(tr, l.preview, `bytes ${l.preview_format}`);
  bytes.title = `${l.size} bytes, shown as ${l.preview_format}`;
  const action = cell(tr, "", "replay");
  if (kv.canReplay) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "replay";
    button.addEventListener("click", () => replay(l.id, action));
    action.append(button);
  }
  $("#dlq tbody").prepend(tr);
  while ($("#dlq tbody").children.length > 200) $("#dlq tbody").lastElementChild.remove();
}

async function replay(id, where) {
  where.dataset.outcome = "pending";
  try {
    const r = await kv.api("/v1/dlq/replay", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ ids: [id] }) });
    const o = r.outcomes[0];
    where.dataset.outcome = o.outcome;
    where.textContent = `${o.outcome} → ${o.topic} (${o.replays}/${r.replay_limit})`;
  } catch (e) {
    where.dataset.outcome = e.status === 409 ? "refused" : "error";
    where.textContent = e.message;
  }
}

function letterFromEvent(d) {
  const bytes = fromBase64(d.payload);
  const [text, form] = preview(bytes);
  return { id: d.event_id, timestamp: d.timestamp, source_topic: d.source_topic, source_partition: d.source_partition,
    source_offset: d.source_offset, processor: d.processor, error_type: d.error_type, reason: d.error,
    preview: text, preview_format: form, size: bytes.length };
}

// -- live tokens, per agent ---------------------------------------------------------------------
function addTokens(d) {
  const agent = d.agent_id || "(unknown agent)";
  const key = `${d.task_id}/${d.attempt}/${d.step}`;
  const cur = kv.tokens.get(agent);
  const text = cur && cur.key === key ? (cur.text + d.text).slice(-600) : d.text;
  kv.tokens.set(agent, { key, task: d.task_id, text, done: d.done });
  $("#tokens").replaceChildren(...[...kv.tokens.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, t]) => {
    const div = document.createElement("div");
    div.className = "agent-tokens";
    div.dataset.agent = name;
    const h = document.createElement("h4");
    h.textContent = `${name} · ${t.task}${t.done ? " · done" : " · writing…"}`;
    const pre = document.createElement("pre");
    pre.textContent = t.text;
    div.append(h, pre);
    return div;
  }));
}

// -- wiring -------------------------------------------------------------------------------------
function socket(path, onMessage) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const sep = path.includes("?") ? "&" : "?";
  const ws = new WebSocket(`${scheme}://${location.host}${path}${sep}access_token=${encodeURIComponent(kv.token)}`);
  ws.onmessage = (m) => onMessage(JSON.parse(m.data));
  ws.onclose = (e) => { if (e.code !== 4401 && e.code !== 4403 && e.code !== 1000) setTimeout(() => { if (ws === kv.ws || ws === kv.feed) reconnect(); }, 3000); };
  return ws;
}

function reopen() {
  for (const ws of [kv.ws, kv.feed]) if (ws) ws.onclose = null, ws.close(1000);
  kv.ws = socket("/v1/kafka/stream", (doc) => { addSample(doc); renderNow(doc); renderLag(); });
  kv.feed = socket("/v1/stream?types=dlq,tokens", (e) => {
    if (e.type === "dlq") addLetter(letterFromEvent(e.data));
    else if (e.type === "tokens") addTokens(e.data);
  });
}

// After a dropped socket: letters that came while it was closed are not in the live feed, so the
// list is read again (addLetter skips the ones shown). Tokens are live only: those are gone.
function reconnect() {
  reopen();
  if (kv.canReplay) kv.api("/v1/dlq?limit=50").then(({ letters }) => letters.forEach(addLetter), () => {});
}

export async function startKafka(api, token) {
  kv.api = api;
  kv.token = token;
  let history, now;
  try {
    [history, now] = await Promise.all([api("/v1/kafka/lag"), api("/v1/kafka")]);
  } catch (e) {
    $("#kafka-panel").hidden = true;  // a project-scoped credential: topics and the DLQ span every project
    if (e.status !== 403) throw e;
    return;
  }
  $("#kafka-panel").hidden = false;
  kv.windowMs = history.window_s * 1000;
  kv.at = history.at;
  kv.series = new Map(history.series.map((s) => [s.group, s.lag]));
  renderNow(now);
  renderLag();
  try {
    const { letters } = await api("/v1/dlq?limit=50");
    kv.canReplay = true;
    letters.forEach(addLetter);
  } catch (e) {
    if (e.status !== 403) throw e;  // a viewer sees the live feed, without replay
  }
  reopen();
}
