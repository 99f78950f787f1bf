// Executions: filters, one page at a time with the API's keyset cursor, refreshed live.
// Nothing beyond the visible page is ever loaded: with a million rows in the
// projection the list costs the same as with ten.

import { get } from "./api.js";
import {
  badge, between, definitionPath, duration, executionPath, h, link, replace, time, truncate, TERMINAL,
} from "./dom.js";

export const STATUSES = ["pending", "running", "paused", "compensating", "completed", "failed", "cancelled"];
const LIMITS = [25, 50, 100, 200];

function toLocalInput(iso) {
  // <input type=datetime-local> speaks local time without a zone.
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) return "";
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
}

function fromLocalInput(value) {
  return value ? new Date(value).toISOString() : "";
}

export function mount(container, route, ctx) {
  const p = route.params;
  const state = {
    workflow: p.get("workflow") || "",
    statuses: p.getAll("status"),
    after: p.get("after") || "",
    before: p.get("before") || "",
    field: p.get("field") || "",
    limit: Number(p.get("limit")) || 50,
    cursor: p.get("cursor") || "",
    previous: JSON.parse(sessionStorage.getItem("orchestrator.cursors") || "[]"),
  };
  if (!state.cursor) state.previous = [];

  function hashFor(changes) {
    const next = { ...state, ...changes };
    const q = new URLSearchParams();
    if (next.workflow) q.set("workflow", next.workflow);
    for (const s of next.statuses) q.append("status", s);
    if (next.after) q.set("after", next.after);
    if (next.before) q.set("before", next.before);
    if (next.field) q.set("field", next.field);
    if (next.limit !== 50) q.set("limit", String(next.limit));
    if (next.cursor) q.set("cursor", next.cursor);
    sessionStorage.setItem("orchestrator.cursors", JSON.stringify(next.previous || []));
    const text = q.toString();
    return "/executions" + (text ? "?" + text : "");
  }

  // -- the filter form --------------------------------------------------------------------
  const workflowInput = h("input", { name: "workflow", value: state.workflow, list: "workflow-names",
    placeholder: "any workflow", autocomplete: "off" });
  const names = h("datalist", { id: "workflow-names" });
  const statusBoxes = STATUSES.map((s) => h("label", { class: "check" },
    h("input", { type: "checkbox", name: "status", value: s, checked: state.statuses.includes(s) }), badge(s)));
  const after = h("input", { type: "datetime-local", name: "after", value: toLocalInput(state.after) });
  const before = h("input", { type: "datetime-local", name: "before", value: toLocalInput(state.before) });
  const field = h("input", { name: "field", value: state.field, placeholder: "input.email=ann@example.com",
    size: 28, title: "input.<path>=<value> or output.<path>=<value> (JSON values allowed)" });
  const limit = h("select", { name: "limit" },
    LIMITS.map((n) => h("option", { value: n, selected: n === state.limit }, `${n} per page`)));

  const form = h("form", { class: "filters", onsubmit: (event) => {
    event.preventDefault();
    ctx.navigate(hashFor({
      workflow: workflowInput.value.trim(),
      statuses: statusBoxes.map((l) => l.querySelector("input")).filter((i) => i.checked).map((i) => i.value),
      after: fromLocalInput(after.value), before: fromLocalInput(before.value), field: field.value.trim(),
      limit: Number(limit.value), cursor: "", previous: [],
    }));
  } },
  h("label", {}, "Workflow ", workflowInput, names),
  h("fieldset", { class: "statuses" }, h("legend", {}, "Status"), statusBoxes),
  h("label", {}, "Created after ", after),
  h("label", {}, "before ", before),
  h("label", {}, "Data ", field),
  limit,
  h("button", { type: "submit" }, "Apply"),
  h("button", { type: "button", class: "secondary", onclick: () => ctx.navigate("/executions") }, "Clear"));

  const message = h("div", { class: "message" });
  const body = h("tbody");
  const table = h("table", { class: "list executions" },
    h("thead", {}, h("tr", {}, ["Execution", "Workflow", "Status", "Created", "Duration", "Error", "Requested by"]
      .map((t) => h("th", {}, t)))), body);
  const pager = h("div", { class: "pager" });

  replace(container, h("h1", {}, "Executions"), form, message, h("div", { class: "table-box" }, table), pager);
  get("/definitions").then((data) => {
    replace(names, (data.items || []).map((d) => h("option", { value: d.name })));
  }).catch(() => {});

  function fieldParams() {
    const m = /^((?:input|output)\.[^=]+)=(.*)$/.exec(state.field);
    return m ? { [m[1]]: m[2] } : {};
  }

  function row(e) {
    const ended = TERMINAL.has(e.status);
    return h("tr", { dataset: { id: e.id, status: e.status } },
      h("td", { class: "mono" }, link(executionPath(e.id), truncate(e.id, 44))),
      h("td", {}, link(definitionPath(e.workflow_name, e.workflow_version), e.workflow_name),
        e.workflow_version ? h("span", { class: "muted" }, " @" + e.workflow_version) : null),
      h("td", {}, badge(e.status)),
      h("td", {}, time(e.created_at)),
      h("td", { class: ended ? "nowrap" : "nowrap muted" }, duration(between(e.started_at || e.created_at, e.finished_at))),
      h("td", { class: "error", title: e.error || "" },
        e.failed_step ? h("span", { class: "mono" }, e.failed_step + ": ") : null, truncate(e.error || "", 90)),
      h("td", { class: "muted" }, e.requested_by || ""));
  }

  async function refresh() {
    if (state.field && !Object.keys(fieldParams()).length) {
      replace(message, h("p", { class: "error" }, "Data filter: write input.<path>=<value> or output.<path>=<value>."));
      return;
    }
    const data = await get("/executions", {
      workflow: state.workflow, status: state.statuses, created_after: state.after, created_before: state.before,
      limit: state.limit, cursor: state.cursor, ...fieldParams(),
    }).catch((err) => {
      replace(message, h("p", { class: "error" }, err.message));
      throw err;
    });
    replace(message);
    const items = data.items || [];
    replace(body, items.length ? items.map(row)
      : h("tr", {}, h("td", { colspan: 7, class: "empty" }, "No executions match these filters.")));
    const first = !state.cursor;
    replace(pager,
      h("button", { type: "button", class: "secondary", disabled: first,
        onclick: () => ctx.navigate(hashFor({ cursor: "", previous: [] })) }, "⇤ Newest"),
      h("button", { type: "button", class: "secondary", disabled: first, onclick: () => {
        const previous = state.previous.slice(0, -1);
        ctx.navigate(hashFor({ cursor: state.previous[state.previous.length - 1] || "", previous }));
      } }, "← Newer"),
      h("span", { class: "muted" }, `${items.length} shown` + (first ? ", newest first" : "")),
      h("button", { type: "button", class: "secondary", disabled: !data.next_cursor, onclick: () =>
        ctx.navigate(hashFor({ cursor: data.next_cursor, previous: [...state.previous, state.cursor] })) },
      "Older →"));
  }

  return { refresh };
}
