// Analytics: throughput, success rate, p50/p95 durations per workflow and per step,
// the slowest step runs and the most frequent failure reasons of a time window.

import { get } from "./api.js";
import {
  badge, count, definitionPath, duration, executionPath, h, link, localTime, parseTime, percent, replace, svg, time,
  truncate,
} from "./dom.js";

const RANGES = [["1h", 3600e3], ["6h", 6 * 3600e3], ["24h", 24 * 3600e3], ["7d", 7 * 86400e3], ["30d", 30 * 86400e3]];

export function mount(container, route, ctx) {
  const workflow = route.params.get("workflow") || "";
  const range = RANGES.find(([r]) => r === route.params.get("range")) ? route.params.get("range") : "24h";

  const workflowInput = h("input", { value: workflow, list: "analytics-workflows", placeholder: "all workflows" });
  const names = h("datalist", { id: "analytics-workflows" });
  const rangeSelect = h("select", {}, RANGES.map(([r]) => h("option", { value: r, selected: r === range }, "last " + r)));
  const form = h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    const q = new URLSearchParams();
    if (workflowInput.value.trim()) q.set("workflow", workflowInput.value.trim());
    q.set("range", rangeSelect.value);
    ctx.navigate("/analytics?" + q.toString());
  } }, h("label", {}, "Workflow ", workflowInput, names), rangeSelect, h("button", { type: "submit" }, "Show"));

  const message = h("div", { class: "message" });
  const cards = h("div", { class: "cards" });
  const chart = h("div", { class: "chart" });
  const workflows = h("div");
  const steps = h("div");
  const slowest = h("div");
  const failures = h("div");
  replace(container, h("h1", {}, "Analytics"), form, message, cards,
    h("section", { class: "card" }, h("h2", {}, "Throughput"), chart),
    h("section", { class: "card" }, h("h2", {}, "Durations per workflow"), workflows),
    h("section", { class: "card" }, h("h2", {}, "Durations per step"), steps),
    h("section", { class: "card" }, h("h2", {}, "Top failure reasons"), failures),
    h("section", { class: "card" }, h("h2", {}, "Slowest step runs"), slowest));
  get("/definitions").then((d) => replace(names, (d.items || []).map((i) => h("option", { value: i.name }))))
    .catch(() => {});

  function table(headers, rows, empty) {
    return h("table", { class: "list" }, h("thead", {}, h("tr", {}, headers.map((t) => h("th", {}, t)))),
      h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: headers.length, class: "empty" }, empty))));
  }

  async function refresh() {
    const span = RANGES.find(([r]) => r === range)[1];
    // Rounded up (to 10 s, or a minute for windows of days): consoles showing the same
    // window share the server's cached answer.
    const step = span > 86400e3 ? 60000 : 10000;
    const until = new Date(Math.ceil(Date.now() / step) * step);
    const data = await get("/analytics", {
      workflow, since: new Date(until.getTime() - span).toISOString(), until: until.toISOString(),
    }).catch((err) => {
      replace(message, h("p", { class: "error" }, err.message));
      throw err;
    });
    replace(message);
    const t = data.totals;
    const card = (label, value, cls) => h("div", { class: ["stat", cls] }, h("div", { class: "value" }, value),
      h("div", { class: "label" }, label));
    replace(cards,
      card("started", count(t.started)),
      card("ended", count(t.ended)),
      card("success rate", percent(t.success_rate), t.success_rate !== null && t.success_rate < 0.9 ? "bad" : "good"),
      card("completed", count(t.completed)),
      card("failed", count(t.failed), t.failed ? "bad" : null),
      card("cancelled", count(t.cancelled)),
      card("in flight", count(Object.values(t.in_flight || {}).reduce((a, b) => a + b, 0))));
    replace(chart, throughputChart(data), h("p", { class: "muted small" },
      `Buckets of ${duration(data.bucket_seconds * 1000)}, ${localTime(parseTime(data.since))} – ` +
      `${localTime(parseTime(data.until))}. Success rate: completed / (completed + failed); cancelled apart.`));
    replace(workflows, table(["Workflow", "Ended", "Success", "Failed", "Cancelled", "p50", "p95", "Max"],
      data.workflows.map((w) => h("tr", {},
        h("td", {}, link(definitionPath(w.workflow), w.workflow)), h("td", { class: "num" }, count(w.ended)),
        h("td", { class: "num" }, percent(w.success_rate)), h("td", { class: "num" }, count(w.failed)),
        h("td", { class: "num" }, count(w.cancelled)), h("td", { class: "num" }, duration(w.p50_ms)),
        h("td", { class: "num" }, duration(w.p95_ms)), h("td", { class: "num" }, duration(w.max_ms)))),
      "No execution ended in this window."));
    const longest = Math.max(1, ...data.steps.map((s) => s.p95_ms || 0));
    replace(steps, table(["Workflow", "Step", "Runs", "Failed", "Retries", "p50", "p95", "", "Max"],
      data.steps.map((s) => h("tr", { class: s.phase === "compensation" ? "comp" : null },
        h("td", {}, s.workflow), h("td", { class: "mono" }, s.step, s.phase === "compensation"
          ? h("span", { class: "muted" }, " (compensation)") : ""),
        h("td", { class: "num" }, count(s.runs)), h("td", { class: "num" }, count(s.failed)),
        h("td", { class: "num" }, count(s.retries)), h("td", { class: "num" }, duration(s.p50_ms)),
        h("td", { class: "num" }, duration(s.p95_ms)),
        h("td", { class: "spark" }, h("span", { class: "hbar", style: { width: (100 * (s.p95_ms || 0) / longest) + "%" } })),
        h("td", { class: "num" }, duration(s.max_ms)))),
      "No step ran in this window."),
    data.step_sample && data.step_sample.sampled
      ? h("p", { class: "muted small" }, `Steps of the ${count(data.step_sample.executions)} most recent executions that ended in the window.`)
      : null);
    replace(slowest, table(["Step", "Execution", "Status", "Duration", "Started"],
      data.slowest_steps.map((s) => h("tr", {},
        h("td", { class: "mono" }, truncate(s.step, 40)),
        h("td", { class: "mono nowrap" }, link(executionPath(s.execution_id), truncate(s.execution_id, 40))),
        h("td", {}, badge(s.status)), h("td", { class: "num" }, duration(s.duration_ms)),
        h("td", {}, time(s.started_at, { age: false })))),
      "Nothing yet."));
    replace(failures, table(["Count", "Workflow / step", "Reason", "Last", "Example"],
      data.failure_reasons.map((f) => h("tr", {},
        h("td", { class: "num" }, count(f.count)),
        h("td", { class: "nowrap" }, f.workflow, f.step ? h("div", { class: "mono small" }, f.step) : ""),
        h("td", { class: "error reason", title: f.reason }, truncate(f.reason, 240)),
        h("td", {}, time(f.last_seen)),
        h("td", { class: "mono small nowrap" }, link(executionPath(f.example_execution_id), truncate(f.example_execution_id, 36))))),
      "No failures in this window."));
  }
  // Windows of days change little from one minute to the next, and cost more to compute.
  return { refresh, interval: RANGES.find(([r]) => r === range)[1] > 86400e3 ? 60000 : 10000 };
}

// Per bucket: started (left bar) and ended (right bar, stacked completed / failed / cancelled).
function throughputChart(data) {
  const buckets = data.throughput || [];
  const W = 960, H = 220, left = 44, bottom = 24, top = 10;
  const max = Math.max(1, ...buckets.map((b) => Math.max(b.started, b.finished)));
  const slot = (W - left) / Math.max(buckets.length, 1);
  const bw = Math.max(1, slot / 2 - 1.5);
  const y = (v) => top + (H - top - bottom) * (1 - v / max);
  const root = svg("svg", { class: "throughput", viewBox: `0 0 ${W} ${H}`, role: "img",
    "aria-label": "executions started and ended per time bucket" });
  for (const v of [0, max / 2, max]) {
    root.append(svg("line", { class: "grid", x1: left, x2: W, y1: y(v), y2: y(v) }),
      svg("text", { class: "axis", x: left - 6, y: y(v) + 4, "text-anchor": "end" }, count(Math.round(v))));
  }
  const every = Math.ceil(buckets.length / 8);
  buckets.forEach((b, i) => {
    const x = left + i * slot;
    const tip = `${localTime(parseTime(b.t))}: ${b.started} started, ${b.finished} ended ` +
      `(${b.completed} completed, ${b.failed} failed, ${b.cancelled} cancelled)`;
    const g = svg("g", {}, svg("title", {}, tip));
    if (b.started) {
      g.append(svg("rect", { class: "bar started", x: x + 1, y: y(b.started), width: bw, height: y(0) - y(b.started) }));
    }
    let base = 0;
    for (const part of ["completed", "failed", "cancelled"]) {
      if (!b[part]) continue;
      g.append(svg("rect", { class: "bar " + part, x: x + 1 + bw + 1, y: y(base + b[part]), width: bw,
        height: y(base) - y(base + b[part]) }));
      base += b[part];
    }
    root.append(g);
    if (i % every === 0) {
      const d = new Date(parseTime(b.t));
      const label = data.bucket_seconds >= 86400 ? d.toLocaleDateString()
        : d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      root.append(svg("text", { class: "axis", x: x + 1, y: H - 6 }, label));
    }
  });
  const legend = h("div", { class: "legend" }, ["started", "completed", "failed", "cancelled"].map((k) =>
    h("span", {}, h("i", { class: "swatch " + k }), k)));
  return [root, legend];
}
