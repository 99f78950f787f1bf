// The timeline of an execution: one horizontal bar per step run, from started_at
// to finished_at (or now, while it runs), coloured by status, on the execution's time axis.

import { duration, h, parseTime, truncate } from "./dom.js";

const MAX_ROWS = 200;

function tickStep(span) {
  const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000, 60000, 120000,
    300000, 600000, 900000, 1800000, 3600000, 7200000, 21600000, 43200000, 86400000];
  return steps.find((s) => span / s <= 6) || span / 6;
}

export function drawTimeline(execution, steps, { now = Date.now(), maxRows = MAX_ROWS } = {}) {
  const t0 = parseTime(execution.started_at) ?? parseTime(execution.created_at);
  if (t0 === null) return h("p", { class: "muted" }, "Not started.");
  const order = new Map((steps || []).map((s, i) => [s, i])); // the definition's order breaks ties
  const started = (steps || []).filter((s) => parseTime(s.started_at) !== null)
    .sort((a, b) => parseTime(a.started_at) - parseTime(b.started_at) || order.get(a) - order.get(b));
  const ends = started.map((s) => parseTime(s.finished_at) ?? now);
  const t1 = Math.max(parseTime(execution.finished_at) ?? now, t0 + 1, ...ends);
  const span = t1 - t0;
  const pct = (t) => ((t - t0) / span) * 100;

  const axis = h("div", { class: "tl-axis" });
  const step = tickStep(span);
  for (let t = 0; t <= span * 0.93; t += step) { // none at the very right: its label would not fit
    axis.append(h("span", { class: "tick", style: { left: pct(t0 + t) + "%" } }, "+" + duration(t)));
  }

  function bar(status, start, end, open, label, title) {
    const left = pct(start);
    const width = Math.max(pct(end) - left, 0.4);
    // The label goes after the bar; when the bar reaches the right edge, before it,
    // or inside it when it starts near the left edge too.
    let place = { left: (left + width + 0.5) + "%" };
    let inside = false;
    if (left + width > 78) {
      if (left > 22) place = { right: (100 - left + 0.5) + "%" };
      else {
        place = { right: (100 - left - width + 0.5) + "%" };
        inside = true;
      }
    }
    return h("div", { class: "tl-track" },
      h("div", { class: ["tl-bar", "st-" + status, open ? "open" : null], title,
        style: { left: left + "%", width: width + "%" } }),
      h("span", { class: ["tl-text", inside ? "inside" : null], style: place }, label));
  }

  const rows = [];
  const execEnd = parseTime(execution.finished_at) ?? now;
  rows.push(h("div", { class: "tl-row execution" },
    h("div", { class: "tl-label" }, h("strong", {}, "execution")),
    bar(execution.status, t0, execEnd, !execution.finished_at, duration(execEnd - t0), `${execution.status}: ${duration(execEnd - t0)}`)));
  started.slice(0, maxRows).forEach((s, i) => {
    const start = parseTime(s.started_at);
    const end = ends[i];
    const took = duration(end - start) + (s.finished_at ? "" : " so far");
    const attempts = s.attempts > 1 ? ` · ${s.attempts} attempts` : "";
    const extra = s.waiting_for && !s.finished_at ? ` · waiting for ${s.waiting_for}` : "";
    rows.push(h("div", { class: ["tl-row", s.phase === "compensation" ? "comp" : null], dataset: { step: s.step_name } },
      h("div", { class: "tl-label mono", title: s.step_name }, truncate(s.step_name, 34)),
      bar(s.status, start, end, !s.finished_at, took + attempts + extra,
        `${s.step_name}: ${s.status}, ${took}${attempts}${s.error ? "\n" + s.error : ""}`)));
  });
  const notStarted = (steps || []).length - started.length;
  return h("div", { class: "timeline" }, h("div", { class: "tl-row" }, h("div", { class: "tl-label" }), axis), rows,
    started.length > maxRows ? h("p", { class: "muted small" }, `… and ${started.length - maxRows} more step runs.`) : null,
    notStarted > 0 ? h("p", { class: "muted small" }, `${notStarted} step(s) not started (pending or skipped).`) : null);
}
