// "Why is it waiting?": the execution's open waits, timers, running steps and
// child executions, and a pause, said in sentences.

import { executionPath, h, link, parseTime, relative, time, TERMINAL } from "./dom.js";

function when(iso) {
  return iso ? [" at ", time(iso, { age: false }), ` (${relative(parseTime(iso))})`] : "";
}

function stepRef(key) {
  return h("span", { class: "mono step-ref" }, key);
}

export function explainWaiting(detail, events) {
  const e = detail.execution;
  const steps = detail.steps || [];
  const items = [];
  if (TERMINAL.has(e.status)) return null;

  if (e.status === "paused") {
    const paused = [...(events || [])].reverse().find((ev) => ev.event_type === "ExecutionPaused");
    const p = (paused && paused.payload) || {};
    items.push(h("li", {}, h("strong", {}, "Paused"), p.requested_by ? ` by ${p.requested_by}` : "",
      p.reason ? `: “${p.reason}”` : "", paused ? [" ", time(paused.recorded_at)] : "",
      ". Nothing new starts until it is resumed; steps already running finish."));
  }
  if (e.status === "compensating") {
    items.push(h("li", {}, h("strong", {}, "Compensating"),
      e.compensation_reason ? ` after: ${e.compensation_reason}` : "",
      e.compensation_execution_id ? [" — compensation workflow ", link(executionPath(e.compensation_execution_id),
        e.compensation_execution_id)] : ""));
  }
  for (const w of detail.waits || []) {
    const what = String(w.waiting_for || "");
    const reason = what.startsWith("signal:")
      ? ["the signal ", h("code", {}, what.slice(7)), " (orchestrator signal ", h("code", {}, e.id), " ",
        h("code", {}, what.slice(7)), ")"]
      : what ? ["the event ", h("code", {}, what)] : "an event";
    items.push(h("li", {}, "Step ", stepRef(w.step), " waits for ", reason,
      w.timeout_at ? ["; gives up", when(w.timeout_at)] : "; no timeout", "."));
  }
  const waitingSteps = new Set((detail.waits || []).map((w) => w.step));
  for (const s of steps) {
    if (s.status === "waiting" && !waitingSteps.has(s.step_name) && s.waiting_for) {
      items.push(h("li", {}, "Step ", stepRef(s.step_name), " waits for ", h("code", {}, s.waiting_for),
        s.wait_until ? ["; until", when(s.wait_until)] : "", "."));
    }
  }
  for (const t of detail.timers || []) {
    const kind = String(t.kind || "").replace("_", "-");
    const step = t.step ? stepRef(t.step) : null;
    if (kind === "retry") items.push(h("li", {}, "Step ", step, " retries", when(t.fire_at), " (backoff after a failed attempt)."));
    else if (kind === "timeout") items.push(h("li", {}, "Step ", step, "'s attempt times out", when(t.fire_at), "."));
    else if (kind === "execution-timeout") items.push(h("li", {}, "The execution times out", when(t.fire_at), "."));
    else if (kind === "wait" || kind === "delay") {
      if (!waitingSteps.has(t.step)) items.push(h("li", {}, "Step ", step, " sleeps until", when(t.fire_at), "."));
    } else items.push(h("li", {}, `Timer ${t.timer_id}`, step ? [" of ", step] : "", " fires", when(t.fire_at), "."));
  }
  for (const s of steps) {
    if (s.child_execution_id && !["completed", "failed", "skipped", "cancelled"].includes(s.status)) {
      items.push(h("li", {}, "Step ", stepRef(s.step_name), " waits for its child execution ",
        link(executionPath(s.child_execution_id), s.child_execution_id), "."));
    } else if ((s.status === "running" || s.status === "retrying") && !s.child_execution_id && !s.items_total
      && s.step_type !== "loop" && s.step_type !== "switch") {
      items.push(h("li", {}, "Step ", stepRef(s.step_name), s.status === "retrying" ? " is being retried" : " is running",
        s.attempts > 1 ? ` (attempt ${s.attempts})` : "", s.breaker && s.breaker !== "closed"
          ? `; the service's circuit breaker is ${s.breaker}` : "", "."));
    } else if (s.items_total && s.status === "running") {
      const done = (s.iterations_completed || 0) + (s.iterations_failed || 0);
      items.push(h("li", {}, "Step ", stepRef(s.step_name), ` has ${done} of ${s.items_total} items done`,
        s.iterations_failed ? `, ${s.iterations_failed} failed` : "", "."));
    }
  }
  if (!items.length) {
    items.push(h("li", { class: "muted" }, e.status === "pending"
      ? "Recorded, not started yet: the decider has not taken it up."
      : "Nothing pending is recorded: the next step is being scheduled."));
  }
  return h("ul", { class: "why" }, items);
}
