// An execution's event history, read in pages with ?after=<sequence>: the first
// page at once, older-to-newer; more on request; new events appended live once
// the end is reached.

import { get } from "./api.js";
import { h, jsonBlock, mask, time, truncate } from "./dom.js";

const PAGE = 100;

export function historySection(executionId) {
  const events = [];
  let after = null; // the last sequence read
  let atEnd = false;
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true, onclick: () => load(true) },
    "Load more events");
  const note = h("span", { class: "muted small" });
  const el = h("div", {},
    h("div", { class: "history" }, h("table", { class: "list events" },
      h("thead", {}, h("tr", {}, ["#", "Recorded", "Event", "Cause", "Payload"].map((t) => h("th", {}, t)))), body)),
    h("div", { class: "pager" }, more, note));

  function row(ev) {
    const payload = mask(ev.payload);
    const summary = truncate(JSON.stringify(payload), 140);
    return h("tr", { class: "ev-" + ev.event_type },
      h("td", { class: "num" }, ev.sequence),
      h("td", {}, time(ev.recorded_at, { age: false })),
      h("td", {}, h("strong", {}, ev.event_type)),
      h("td", { class: "mono muted small", title: `partition ${ev.kafka_partition}, offset ${ev.kafka_offset}` },
        ev.cause),
      h("td", {}, h("details", {}, h("summary", { class: "mono small" }, summary), jsonBlock(payload))));
  }

  // explicit: the user asked for the next page; otherwise only follow the end live.
  async function load(explicit = false) {
    if (!explicit && !atEnd && after !== null) return events;
    const data = await get(`/executions/${encodeURIComponent(executionId)}/history`,
      { after: after === null ? undefined : after, limit: PAGE });
    const fresh = data.events || [];
    for (const ev of fresh) {
      events.push(ev);
      body.append(row(ev));
      after = ev.sequence;
    }
    atEnd = data.next_after === null || data.next_after === undefined;
    more.hidden = atEnd;
    note.textContent = `${events.length} event${events.length === 1 ? "" : "s"}` + (atEnd ? "" : ", more to load");
    return events;
  }

  return { el, load, events };
}
