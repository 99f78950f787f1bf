// Definitions: the registered workflows; one workflow's versions, each with its graph and its source.

import { get } from "./api.js";
import { definitionPath, h, link, replace, time } from "./dom.js";
import { drawGraph } from "./graph.js";

export function mount(container, route, ctx) {
  const [, name, version] = route.parts;
  return name ? mountOne(container, name, version, ctx) : mountList(container);
}

function mountList(container) {
  const body = h("tbody");
  const message = h("div", { class: "message" });
  replace(container, h("h1", {}, "Definitions"), message, h("table", { class: "list definitions" },
    h("thead", {}, h("tr", {}, ["Workflow", "Latest version", "Versions", "Registered", "By", "Description"]
      .map((t) => h("th", {}, t)))), body));

  async function refresh() {
    const data = await get("/definitions").catch((err) => {
      replace(message, h("p", { class: "error" }, err.message));
      throw err;
    });
    replace(message);
    const items = data.items || [];
    replace(body, items.length ? items.map((d) => h("tr", {},
      h("td", {}, link(definitionPath(d.name), d.name)),
      h("td", {}, link(definitionPath(d.name, d.latest_version), d.latest_version)),
      h("td", { class: "num" }, d.versions),
      h("td", {}, time(d.registered_at)),
      h("td", { class: "muted" }, d.registered_by || ""),
      h("td", { class: "muted" }, d.description || "")))
      : h("tr", {}, h("td", { colspan: 6, class: "empty" },
        "No definitions registered yet (orchestrator definitions apply FILE).")));
  }
  return { refresh, interval: 10000 };
}

function mountOne(container, name, wanted, ctx) {
  const message = h("div", { class: "message" });
  const versions = h("div", { class: "versions" });
  const facts = h("div");
  const graph = h("div", { class: "graph-box" });
  const source = h("pre", { class: "source" });
  let shown = null; // the version whose graph and source are on screen

  replace(container,
    h("p", { class: "crumbs" }, link("/definitions", "Definitions"), " / ", name),
    h("h1", {}, name), message, versions, facts,
    h("section", { class: "card" }, h("h2", {}, "Graph"), graph),
    h("section", { class: "card" }, h("h2", {}, "Source"), source));

  async function refresh() {
    const data = await get(`/definitions/${encodeURIComponent(name)}`).catch((err) => {
      replace(message, h("p", { class: "error" }, err.status === 404 ? `No workflow named ${name}.` : err.message));
      throw err;
    });
    replace(message);
    const list = data.versions || [];
    // versions come in version order: the last is the latest
    const current = wanted || (list.length ? list[list.length - 1].version : null);
    replace(versions, h("span", { class: "muted" }, "Versions: "), list.map((v) => v.version === current
      ? h("strong", { class: "version current" }, v.version)
      : h("a", { class: "version", href: "#" + definitionPath(name, v.version) }, v.version)),
    " ", link(`/executions?workflow=${encodeURIComponent(name)}`, "its executions →"));
    if (!current || shown === current) return;
    const base = `/definitions/${encodeURIComponent(name)}/versions/${encodeURIComponent(current)}`;
    const [detail, layout] = await Promise.all([get(base), get(base + "/graph").catch((err) => err)]);
    const info = list.find((v) => v.version === current) || {};
    replace(facts, h("dl", { class: "facts" },
      h("div", {}, h("dt", {}, "Version"), h("dd", {}, detail.version)),
      h("div", {}, h("dt", {}, "Registered"), h("dd", {}, time(detail.registered_at))),
      h("div", {}, h("dt", {}, "By"), h("dd", {}, detail.registered_by || "—")),
      h("div", {}, h("dt", {}, "Steps"), h("dd", {}, info.step_count ?? "—")),
      h("div", {}, h("dt", {}, "Digest"), h("dd", { class: "mono small", title: detail.digest },
        String(detail.digest || "").slice(0, 16) + "…"))));
    replace(graph, layout instanceof Error
      ? h("p", { class: "error" }, `No graph: ${layout.message}`)
      : [drawGraph(layout), layout.compensation_workflow
        ? h("p", { class: "muted" }, `On failure it starts the compensation workflow ${layout.compensation_workflow}.`)
        : null]);
    replace(source, detail.source || "");
    shown = current;
  }
  return { refresh, interval: 10000 };
}
