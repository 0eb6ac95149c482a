// SVG rendering for the dashboard: the task DAG and the small charts. Built with DOM calls only
// (never innerHTML), so text from events can never become markup.
const NS = "http://www.w3.org/2000/svg";

export function el(tag, attrs = {}, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

// Depth of each task = longest chain of dependencies below it; tasks are laid out in columns by depth.
// Computed in topological order (Kahn's algorithm) with a queue, not recursion: a plan can be one chain
// of thousands of tasks, deeper than the browser's stack. Tasks on a cycle (never in a valid plan) get 0.
function depths(tasks) {
  const byId = new Map(tasks.map((t) => [t.task_id, t]));
  const waiting = new Map();
  const dependents = new Map();
  for (const t of byId.values()) {
    const deps = (t.depends_on || []).filter((d) => byId.has(d));
    waiting.set(t.task_id, deps.length);
    for (const d of deps) {
      if (!dependents.has(d)) dependents.set(d, []);
      dependents.get(d).push(t.task_id);
    }
  }
  const depth = new Map();
  const queue = [...byId.keys()].filter((id) => waiting.get(id) === 0);
  for (const id of queue) depth.set(id, 0);
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const next of dependents.get(id) || []) {
      depth.set(next, Math.max(depth.get(next) || 0, depth.get(id) + 1));
      waiting.set(next, waiting.get(next) - 1);
      if (waiting.get(next) === 0) queue.push(next);
    }
  }
  for (const id of byId.keys()) if (!depth.has(id)) depth.set(id, 0);
  return depth;
}

export function dag(tasks) {
  const W = 150, H = 34, GX = 40, GY = 12;
  const d = depths(tasks);
  const columns = [];
  for (const t of tasks) (columns[d.get(t.task_id)] ||= []).push(t);
  const pos = new Map();
  columns.forEach((col, x) => col.forEach((t, y) => pos.set(t.task_id, { x: x * (W + GX), y: y * (H + GY) })));
  const width = Math.max(1, columns.length) * (W + GX);
  // A loop, not Math.max(...): spreading a very long array exceeds the engine's argument limit.
  const height = columns.reduce((m, c) => Math.max(m, c.length), 1) * (H + GY);
  const svg = el("svg", { class: "dag", viewBox: `0 0 ${width} ${height}`, width, height });
  const defs = el("defs");
  const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto" });
  marker.append(el("path", { d: "M0,0 L10,5 L0,10 z", fill: "#56606b" }));
  defs.append(marker);
  svg.append(defs);
  for (const t of tasks) {
    for (const dep of t.depends_on || []) {
      const a = pos.get(dep), b = pos.get(t.task_id);
      if (!a || !b) continue;
      svg.append(el("path", { class: "edge", d: `M${a.x + W},${a.y + H / 2} C${a.x + W + GX / 2},${a.y + H / 2} ${b.x - GX / 2},${b.y + H / 2} ${b.x},${b.y + H / 2}` }));
    }
  }
  for (const t of tasks) {
    const p = pos.get(t.task_id);
    const g = el("g", { class: "node", transform: `translate(${p.x},${p.y})`, "data-task-id": t.task_id, "data-state": t.state });
    g.append(el("rect", { width: W, height: H, fill: `var(--${t.state}, #7b8794)` }));
    g.append(el("text", { x: 6, y: 14 }, t.task_id.length > 22 ? t.task_id.slice(0, 21) + "…" : t.task_id));
    g.append(el("text", { x: 6, y: 28 }, `${t.role} · ${t.state}`));
    g.append(el("title", {}, `${t.task_id}\n${t.state}${t.reason ? "\n" + t.reason : ""}`));
    svg.append(g);
  }
  return svg;
}

function frame(svg, max) {
  svg.replaceChildren(el("line", { class: "axis", x1: 30, y1: 100, x2: 295, y2: 100 }), el("text", { x: 0, y: 100 }, "0"));
  if (max > 0) svg.append(el("text", { x: 0, y: 12 }, fmt(max)));
}

function fmt(n) {
  return n >= 100 ? n.toFixed(0) : n >= 1 ? n.toFixed(1) : n.toPrecision(2);
}

export function line(svg, values) {
  const max = Math.max(0, ...values);
  frame(svg, max);
  if (values.length < 2 || max === 0) return;
  const step = 265 / (values.length - 1);
  const points = values.map((v, i) => `${30 + i * step},${100 - (v / max) * 88}`).join(" ");
  svg.append(el("polyline", { class: "line", points }));
}

export function bars(svg, entries) {
  const max = Math.max(0, ...entries.map(([, v]) => v || 0));
  frame(svg, max);
  const w = 265 / Math.max(1, entries.length);
  entries.forEach(([label, v], i) => {
    const h = max > 0 ? ((v || 0) / max) * 88 : 0;
    svg.append(el("rect", { class: "bar", x: 32 + i * w, y: 100 - h, width: Math.max(2, w - 6), height: h }));
    svg.append(el("text", { x: 32 + i * w, y: 114 }, label.length > 14 ? label.slice(0, 13) + "…" : label));
  });
}
