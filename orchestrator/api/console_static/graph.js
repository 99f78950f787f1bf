// Draws the layout of GET /definitions/{name}/versions/{version}/graph as SVG,
// optionally coloured by an execution's step statuses (see stepStates).

import { svg, truncate } from "./dom.js";

const MARGIN = 8;
const CHAR = 7; // approximate width of one character at the node font size

// The status and a short note per graph node id, from the execution's step rows.
// Rows of loop iterations and for_each items (`x[3].charge`) fold into their step's node.
const PRIORITY = ["failed", "running", "retrying", "waiting", "pending", "completed", "cancelled", "skipped"];

export function leafName(key) {
  const i = key.lastIndexOf(".");
  return i < 0 ? key : key.slice(i + 1);
}

export function stepStates(steps) {
  const grouped = new Map();
  for (const step of steps || []) {
    const id = leafName(step.step_name);
    if (!grouped.has(id)) grouped.set(id, []);
    grouped.get(id).push(step);
  }
  const states = new Map();
  for (const [id, rows] of grouped) {
    const counts = {};
    for (const row of rows) counts[row.status] = (counts[row.status] || 0) + 1;
    const status = PRIORITY.find((s) => counts[s]) || rows[0].status;
    const one = rows.length === 1 ? rows[0] : null;
    let note = "";
    if (one && one.items_total !== null && one.items_total !== undefined) {
      note = `${(one.iterations_completed || 0) + (one.iterations_failed || 0)}/${one.items_total} items`;
      if (one.iterations_failed) note += `, ${one.iterations_failed} failed`;
    } else if (one && one.step_type === "loop" && one.iterations_started) {
      note = `iteration ${one.iterations_started}`;
    } else if (one) {
      note = one.attempts > 1 ? `${one.status} · attempt ${one.attempts}` : one.status;
    } else {
      note = `${rows.length} runs: ` + PRIORITY.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(", ");
    }
    states.set(id, { status, note, rows, branch: one ? one.branch : null });
    if (one && one.branch) states.set(`${id}::${one.branch}`, { status: "chosen", note: "chosen", rows: [] });
  }
  return states;
}

function depthOf(node, byId) {
  let depth = 0;
  for (let p = node.parent; p && byId.has(p); p = byId.get(p).parent) depth += 1;
  return depth;
}

function anchors(a, b) {
  return [a.x + a.width, a.y + Math.min(a.height, 52) / 2, b.x, b.y + Math.min(b.height, 52) / 2];
}

function bezier(x1, y1, x2, y2) {
  const dx = Math.max(24, (x2 - x1) / 2);
  return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
}

function inside(node, x, y) {
  return x > node.x && x < node.x + node.width && y > node.y && y < node.y + node.height;
}

// An edge that skips columns could run through the nodes between its ends: those it
// would cross are found by sampling its curve, and the edge goes around them, above or
// below, whichever is nearer. Groups holding either end are no obstacle.
function edgePath(a, b, nodes, byId) {
  const [x1, y1, x2, y2] = anchors(a, b);
  const holds = new Set();
  for (const end of [a, b]) for (let p = end.parent; p; p = byId.get(p) && byId.get(p).parent) holds.add(p);
  const candidates = nodes.filter((n) => n !== a && n !== b && !holds.has(n.id) && n.lane === a.lane
    && n.x < x2 && n.x + n.width > x1);
  if (!candidates.length) return bezier(x1, y1, x2, y2);
  const dx = Math.max(24, (x2 - x1) / 2);
  const hit = new Set();
  for (let i = 1; i < 24; i++) {
    const t = i / 24, u = 1 - t;
    const x = u * u * u * x1 + 3 * u * u * t * (x1 + dx) + 3 * u * t * t * (x2 - dx) + t * t * t * x2;
    const y = u * u * u * y1 + 3 * u * u * t * y1 + 3 * u * t * t * y2 + t * t * t * y2;
    for (const n of candidates) if (inside(n, x, y)) hit.add(n);
  }
  if (!hit.size) return bezier(x1, y1, x2, y2);
  const blocking = [...hit];
  const above = Math.min(...blocking.map((n) => n.y)) - 10;
  const below = Math.max(...blocking.map((n) => n.y + n.height)) + 10;
  const mid = (y1 + y2) / 2;
  const yr = Math.abs(mid - above) <= Math.abs(below - mid) ? above : below;
  const left = Math.min(...blocking.map((n) => n.x)) - 8, right = Math.max(...blocking.map((n) => n.x + n.width)) + 8;
  const k1 = Math.max(12, (left - x1) / 2), k2 = Math.max(12, (x2 - right) / 2);
  return `M${x1},${y1} C${x1 + k1},${y1} ${left - k1},${yr} ${left},${yr} L${right},${yr} ` +
    `C${right + k2},${yr} ${x2 - k2},${y2} ${x2},${y2}`;
}

function tooltip(node, state) {
  const lines = [`${node.label} (${node.type})`];
  if (node.detail) lines.push(node.detail);
  if (node.description) lines.push(node.description);
  if (node.condition && node.type !== "case") lines.push("when " + node.condition);
  if (state) {
    lines.push("status: " + state.note);
    const errors = state.rows.map((r) => r.error).filter(Boolean);
    if (errors.length) lines.push("error: " + errors[errors.length - 1]);
  }
  return svg("title", {}, lines.join("\n"));
}

// layout: the API's graph; states: stepStates(...) or null; onSelect(nodeId) when a node is clicked.
export function drawGraph(layout, { states = null, onSelect = null, selected = null } = {}) {
  const byId = new Map(layout.nodes.map((n) => [n.id, n]));
  const width = layout.width + 2 * MARGIN, height = layout.height + 2 * MARGIN;
  const root = svg("svg", {
    class: "graph", viewBox: `${-MARGIN} ${-MARGIN} ${width} ${height}`, width, height,
    role: "img", "aria-label": `graph of ${layout.name} ${layout.version}`,
  });
  root.append(svg("defs", {}, svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse",
  }, svg("path", { d: "M0,0 L10,5 L0,10 z", class: "arrow" }))));

  for (const lane of layout.lanes) {
    root.append(svg("rect", { class: ["lane", "lane-" + lane.id], x: lane.x - 4, y: lane.y, width: lane.width + 8,
      height: lane.height, rx: 6 }));
    root.append(svg("text", { class: "lane-label", x: lane.x + 2, y: lane.y + 17 }, lane.label));
  }

  const stateOf = (node) => (states ? states.get(node.id) : null);
  const statusClass = (node) => {
    const state = stateOf(node);
    if (!states) return "st-none";
    if (state) return "st-" + state.status;
    // A case group of a switch that chose another branch, or has not chosen yet.
    return node.type === "case" && states.get(node.parent) && states.get(node.parent).branch ? "not-taken" : "st-none";
  };
  const clickable = (node) => (onSelect ? { onclick: () => onSelect(node.id), tabindex: 0 } : {});

  const groups = layout.nodes.filter((n) => n.group).sort((a, b) => depthOf(a, byId) - depthOf(b, byId));
  for (const node of groups) {
    const state = stateOf(node);
    const chars = Math.floor((node.width - 20) / CHAR);
    const second = state && node.type !== "case" ? state.note : node.detail;
    root.append(svg("g", { class: ["group", "type-" + node.type, statusClass(node),
      selected === node.id ? "selected" : null], dataset: { node: node.id }, ...clickable(node) },
    tooltip(node, state),
    svg("rect", { x: node.x, y: node.y, width: node.width, height: node.height, rx: 8 }),
    svg("text", { class: "label", x: node.x + 10, y: node.y + 19 },
      truncate(node.type === "case" ? `case ${node.label}` : `${node.label} · ${node.type}`, chars)),
    svg("text", { class: state && node.type !== "case" ? "note" : "detail", x: node.x + 10, y: node.y + 35 },
      truncate(second || "", Math.floor(chars * 1.1)))));
  }

  const edges = svg("g", { class: "edges" });
  for (const edge of layout.edges) {
    const a = byId.get(edge.source), b = byId.get(edge.target);
    if (!a || !b) continue;
    edges.append(svg("path", { class: ["edge", edge.lane === "compensation" ? "comp" : null], d: edgePath(a, b, layout.nodes, byId),
      "marker-end": "url(#arrow)" }));
    if (edge.join) {
      edges.append(svg("text", { class: "join", x: b.x - 6, y: b.y + 14, "text-anchor": "end" }, edge.join));
    }
  }
  root.append(edges);

  for (const node of layout.nodes.filter((n) => !n.group)) {
    const state = stateOf(node);
    const chars = Math.floor((node.width - 20) / CHAR);
    root.append(svg("g", { class: ["node", "type-" + node.type, statusClass(node),
      selected === node.id ? "selected" : null], dataset: { node: node.id }, ...clickable(node) },
    tooltip(node, state),
    svg("rect", { x: node.x, y: node.y, width: node.width, height: node.height, rx: 6 }),
    svg("text", { class: "label", x: node.x + 10, y: node.y + 20 },
      truncate((node.condition ? "◇ " : "") + node.label, chars)),
    svg("text", { class: "detail", x: node.x + 10, y: node.y + 38 },
      truncate(state ? state.note : node.detail, Math.floor(chars * 1.1)))));
  }
  return root;
}
