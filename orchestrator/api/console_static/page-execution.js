// One execution: what it is, why it waits, its graph coloured by step status, the
// timeline, the steps, input and output (secrets masked), children and the history.
// Operator buttons post to the API and show its decision.

import { get, post } from "./api.js";
import {
  badge, between, definitionPath, duration, executionPath, h, jsonBlock, link, replace, time, TERMINAL,
} from "./dom.js";
import { drawGraph, stepStates } from "./graph.js";
import { historySection } from "./history.js";
import { drawTimeline } from "./timeline.js";
import { explainWaiting } from "./waiting.js";

const ACTIVE_STEP = new Set(["pending", "running", "retrying", "waiting"]);

export function mount(container, route, ctx) {
  const id = route.parts[1];
  const path = `/executions/${encodeURIComponent(id)}`;
  let layout = null; // the definition's graph, fetched once
  let layoutKey = null;
  let selected = null;
  const opened = new Set(); // steps whose output the user opened: kept open across refreshes
  let showRuns = false; // the runs of loop iterations and for_each items, when there are many
  const FOLD_OVER = 12;

  const title = h("h1", {}, "Execution ", h("span", { class: "mono" }, id));
  const summary = h("div", { class: "summary" });
  const actions = h("div", { class: "actions" });
  const actionMessage = h("div", { class: "message" });
  const why = h("section", { class: "card", hidden: true });
  const graph = h("div", { class: "graph-box" });
  const timeline = h("div");
  const fold = h("p", { class: "small" });
  const stepsBody = h("tbody");
  const data = h("div", { class: "two" });
  const children = h("section", { class: "card", hidden: true });
  const history = historySection(id);
  const message = h("div", { class: "message" });

  replace(container,
    h("p", { class: "crumbs" }, link("/executions", "Executions"), " / ", id),
    title, message, summary, actions, actionMessage, why,
    h("section", { class: "card" }, h("h2", {}, "Graph"), graph),
    h("section", { class: "card" }, h("h2", {}, "Timeline"), fold, timeline),
    h("section", { class: "card" }, h("h2", {}, "Steps"), h("table", { class: "list steps" },
      h("thead", {}, h("tr", {}, ["Step", "Type", "Status", "Attempts", "Started", "Duration", "Detail", "Output", ""]
        .map((t) => h("th", {}, t)))), stepsBody)),
    data, children,
    h("section", { class: "card" }, h("h2", {}, "History"), history.el));

  async function act(label, command, body, pathSuffix = command) {
    const reason = window.prompt(`${label} ${id}: reason (optional)`, "");
    if (reason === null) return;
    replace(actionMessage, h("p", { class: "muted" }, `${label}: sending…`));
    try {
      const result = await post(`${path}/${pathSuffix}`, { ...body, ...(reason ? { reason } : {}) }, { wait: 5 });
      const outcome = result.outcome || "sent";
      replace(actionMessage, h("p", { class: outcome === "rejected" ? "error" : "ok" },
        `${label}: ${outcome}`, result.reason ? ` — ${result.reason}` : "",
        result.offset !== undefined ? h("span", { class: "muted" }, ` (command at partition ${result.partition}, offset ${result.offset})`) : ""));
    } catch (err) {
      replace(actionMessage, h("p", { class: "error" }, `${label}: ${err.message}`,
        err.status === 403 ? " This key's role may only read." : ""));
    }
    ctx.refreshNow();
  }

  function renderActions(e) {
    if (!ctx.canOperate()) {
      replace(actions, h("span", { class: "muted small" }, "Read-only key: operator actions are hidden."));
      return;
    }
    const ended = TERMINAL.has(e.status);
    const button = (label, onclick, cls = "secondary") => h("button", { type: "button", class: cls, onclick }, label);
    replace(actions,
      !ended ? button("Cancel", () => act("Cancel", "cancel", {}), "danger") : null,
      e.status === "running" || e.status === "pending" ? button("Pause", () => act("Pause", "pause", {})) : null,
      e.status === "paused" ? button("Resume", () => act("Resume", "resume", {})) : null,
      e.status === "failed" || e.status === "cancelled" ? button("Retry", () => act("Retry", "retry", {})) : null);
  }

  function renderSummary(e) {
    const field = (label, ...value) => h("div", {}, h("dt", {}, label), h("dd", {}, ...value));
    replace(summary, h("dl", { class: "facts" },
      field("Status", badge(e.status)),
      field("Workflow", link(definitionPath(e.workflow_name, e.workflow_version), e.workflow_name),
        e.workflow_version ? h("span", { class: "muted" }, " @" + e.workflow_version) : ""),
      field("Created", time(e.created_at)),
      field("Started", time(e.started_at)),
      field("Finished", time(e.finished_at)),
      field("Duration", duration(between(e.started_at || e.created_at, e.finished_at)),
        e.finished_at ? "" : h("span", { class: "muted" }, " so far")),
      field("Requested by", e.requested_by || "—"),
      e.parent_execution_id ? field("Parent", link(executionPath(e.parent_execution_id), e.parent_execution_id),
        e.parent_relation ? h("span", { class: "muted" }, ` (${e.parent_relation})`) : "") : null,
      e.compensation_execution_id ? field("Compensation",
        link(executionPath(e.compensation_execution_id), e.compensation_execution_id)) : null,
      e.compensation_status ? field("Compensation status", badge(e.compensation_status),
        e.compensation_error ? " " + e.compensation_error : "") : null,
      e.error ? field("Error", h("span", { class: "error" }, e.failed_step ? `${e.failed_step}: ` : "", e.error)) : null));
  }

  function stepDetail(s) {
    const bits = [];
    if (s.waiting_for) bits.push(`waits for ${s.waiting_for}`);
    if (s.branch) bits.push(`case ${s.branch}`);
    if (s.items_total !== null && s.items_total !== undefined) {
      bits.push(`${(s.iterations_completed || 0) + (s.iterations_failed || 0)}/${s.items_total} items`);
    } else if (s.iterations_started) bits.push(`${s.iterations_started} iterations`);
    if (s.status_reason) bits.push(s.status_reason);
    if (s.breaker && s.breaker !== "closed") bits.push(`breaker ${s.breaker}`);
    return h("span", {}, bits.join(" · "), s.child_execution_id
      ? [" child ", link(executionPath(s.child_execution_id), s.child_execution_id)] : "",
    s.error ? h("div", { class: "error small" }, s.error) : "");
  }

  function renderSteps(e, steps) {
    const canSkip = ctx.canOperate() && !TERMINAL.has(e.status);
    const rows = steps.slice(0, 500).map((s) => {
      const output = h("details", { open: opened.has(s.step_name), ontoggle: (ev) => {
        if (ev.target.open) opened.add(s.step_name); else opened.delete(s.step_name);
      } }, h("summary", {}, "output"), jsonBlock(s.output));
      return h("tr", { class: [selected && s.step_name.split(".").pop() === selected ? "selected" : null,
        s.phase === "compensation" ? "comp" : null], dataset: { step: s.step_name } },
      h("td", { class: "mono" }, s.parent_step ? h("span", { class: "muted" }, "↳ ") : "", s.step_name),
      h("td", { class: "muted" }, s.step_type || ""),
      h("td", {}, badge(s.status)),
      h("td", { class: "num" }, s.attempts || ""),
      h("td", {}, time(s.started_at, { age: false })),
      h("td", {}, s.started_at ? duration(between(s.started_at, s.finished_at)) : "—"),
      h("td", {}, stepDetail(s)),
      h("td", {}, s.output === null || s.output === undefined ? "" : output),
      h("td", {}, canSkip && ACTIVE_STEP.has(s.status) ? h("button", { type: "button", class: "secondary small",
        onclick: () => act(`Skip ${s.step_name} of`, "skip", {}, `steps/${encodeURIComponent(s.step_name)}/skip`) },
      "Skip") : ""));
    });
    replace(stepsBody, rows.length ? rows : h("tr", {}, h("td", { colspan: 9, class: "empty" }, "No steps recorded yet.")),
      steps.length > 500 ? h("tr", {}, h("td", { colspan: 9, class: "muted" }, `… ${steps.length - 500} more step rows`)) : null);
  }

  async function renderGraph(e, steps) {
    const key = `${e.workflow_name}@${e.workflow_version}`;
    if (!e.workflow_version) {
      replace(graph, h("p", { class: "muted" }, "No version recorded: the start was rejected."));
      return;
    }
    if (layoutKey !== key) {
      try {
        layout = await get(`/definitions/${encodeURIComponent(e.workflow_name)}/versions/${encodeURIComponent(e.workflow_version)}/graph`);
      } catch (err) {
        layout = null;
        replace(graph, h("p", { class: "error" }, `No graph: ${err.message}`));
      }
      layoutKey = key;
    }
    if (layout) {
      replace(graph, drawGraph(layout, { states: stepStates(steps), selected, onSelect: (node) => {
        selected = selected === node ? null : node;
        ctx.refreshNow();
      } }));
    }
  }

  async function refresh() {
    let detail;
    try {
      detail = await get(path);
    } catch (err) {
      replace(message, h("p", { class: "error" }, err.status === 404
        ? `No execution ${id} in the projection (yet).` : err.message));
      throw err;
    }
    replace(message);
    const e = detail.execution;
    const steps = detail.steps || [];
    const events = await history.load();
    renderSummary(e);
    renderActions(e);
    const reasons = explainWaiting(detail, events);
    why.hidden = !reasons;
    if (reasons) replace(why, h("h2", {}, e.status === "paused" ? "Why it is paused" : "What it is waiting for"), reasons);
    await renderGraph(e, steps);
    // Thousands of item runs would bury the rest: they fold into their composite's row until asked for.
    const runs = steps.filter((s) => s.step_name.includes("["));
    const folded = runs.length > FOLD_OVER && !showRuns;
    const listed = folded ? steps.filter((s) => !s.step_name.includes("[")) : steps;
    replace(fold, runs.length > FOLD_OVER ? [h("span", { class: "muted" }, folded
      ? `${runs.length} runs of loop iterations and for_each items are folded into their step. `
      : `Showing the ${runs.length} runs of iterations and items. `),
    h("button", { type: "button", class: "secondary small", onclick: () => {
      showRuns = !showRuns;
      ctx.refreshNow();
    } }, folded ? "Show them" : "Fold them")] : "");
    replace(timeline, drawTimeline(e, listed));
    renderSteps(e, listed);
    replace(data,
      h("section", { class: "card" }, h("h2", {}, "Input"), jsonBlock(e.input)),
      h("section", { class: "card" }, h("h2", {}, "Output"), jsonBlock(e.output, { empty: "no output yet" })));
    const kids = detail.children || [];
    children.hidden = !kids.length;
    if (kids.length) {
      replace(children, h("h2", {}, "Child executions"), h("ul", {}, kids.map((c) => h("li", {},
        link(executionPath(c.id), c.id), " ", badge(c.status), h("span", { class: "muted" }, ` ${c.workflow_name}`,
          c.parent_relation ? ` (${c.parent_relation})` : "")))));
    }
  }

  return { refresh };
}
