"""A definition's steps as a layered DAG the console draws as SVG.

`layout_definition` is pure: it places every step of a block in columns
(layers) by the language's ordering rules (`definition.dependencies`: explicit
`depends_on`, the implicit sequence, parallel runs), left to right, and nests
the blocks of composite steps inside their step's box: a switch holds one
group per case (then `default`), a loop or for_each holds its body. The
compensation steps get a lane of their own below, in the order they run.
Coordinates are computed here, so the browser only draws; node ids are step
names (the console colours them by the execution's step rows), case groups
get ids `<switch>::<case>` (`:` never occurs in a step name).

The route serves the layout of a registered version, cached by digest.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Path

from ..core.definition import (DelayConfig, ForEachConfig, LoopConfig, ServiceCallConfig, Step, SubWorkflowConfig,
                               SwitchConfig, ValidationConfig, WaitForEventConfig, WorkflowDefinition,
                               block_dependencies)
from ..core.durations import format_duration_ms
from ..core.loading import DefinitionError, load_definition_source
from .auth import READER, ApiKey
from .console_models import DefinitionGraph
from .context import ApiContext, context
from .errors import ERROR_RESPONSES, ApiError, error_doc

__all__ = ["router", "layout_definition", "NODE_WIDTH", "NODE_HEIGHT"]

NODE_WIDTH, NODE_HEIGHT = 200, 52
GAP_X, GAP_Y = 56, 20  # between columns, between nodes of a column
PAD, HEADER = 12, 46  # inside a group box: padding, and the header (its label, then its detail or progress)
LANE_GAP, LANE_HEADER = 28, 26


@dataclass
class _Box:
    """A laid-out subtree: its size, and its nodes and edges in its own coordinates."""

    width: int
    height: int
    nodes: list[dict[str, Any]] = field(default_factory=list)
    edges: list[dict[str, Any]] = field(default_factory=list)

    def moved(self, dx: int, dy: int) -> list[dict[str, Any]]:
        return [{**n, "x": n["x"] + dx, "y": n["y"] + dy} for n in self.nodes]


def layout_definition(defn: WorkflowDefinition) -> dict[str, Any]:
    """{name, version, width, height, lanes, nodes, edges, compensation_workflow} for the console."""
    main = _block(defn.spec.steps, parent=None, composite=None, lane="main")
    lanes = [{"id": "main", "label": "steps", "x": 0, "y": 0, "width": main.width, "height": main.height + LANE_HEADER}]
    nodes = main.moved(0, LANE_HEADER)
    edges = list(main.edges)
    compensation = defn.spec.compensation
    if defn.compensation_steps:
        # Compensation steps run one after another in listed order, each only if its condition holds.
        order = [s.name for s in defn.compensation_steps]
        sequence = {name: (order[i - 1],) if i else () for i, name in enumerate(order)}
        lane = _block(defn.compensation_steps, parent=None, composite=None, lane="compensation", deps=sequence)
        top = lanes[0]["height"] + LANE_GAP
        lanes.append({"id": "compensation", "label": "compensation (runs in this order when the execution fails "
                      "or is cancelled)", "x": 0, "y": top, "width": lane.width, "height": lane.height + LANE_HEADER})
        nodes += lane.moved(0, top + LANE_HEADER)
        edges += lane.edges
    width = max(max(lane["width"] for lane in lanes), NODE_WIDTH)
    for lane in lanes:
        lane["width"] = width
    return {
        "name": defn.name,
        "version": defn.version,
        "width": width,
        "height": lanes[-1]["y"] + lanes[-1]["height"],
        "lanes": lanes,
        "nodes": nodes,
        "edges": edges,
        "compensation_workflow": compensation.workflow if compensation else None,
    }


def _block(steps: tuple[Step, ...], *, parent: str | None, composite: str | None, lane: str,
           deps: dict[str, tuple[str, ...]] | None = None) -> _Box:
    """Steps of one block in columns by dependency depth; composite steps as nested boxes."""
    if not steps:
        return _Box(NODE_WIDTH, NODE_HEIGHT // 2)
    deps = deps if deps is not None else block_dependencies(steps)
    names = [s.name for s in steps]
    inside = {n: [d for d in deps.get(n, ()) if d in names] for n in names}  # unknown names: validation's job
    layer = _layers(names, inside)
    boxes = {s.name: _step_box(s, parent=parent, composite=composite, lane=lane) for s in steps}
    columns: list[list[str]] = [[] for _ in range(max(layer.values()) + 1)]
    row_of: dict[str, float] = {}
    for name in names:  # listed order, then settled by where the dependencies sit (fewer crossings)
        columns[layer[name]].append(name)
    for column in columns:
        column.sort(key=lambda n: (sum(row_of[d] for d in inside[n]) / len(inside[n]) if inside[n] else -1,
                                   names.index(n)))
        for row, name in enumerate(column):
            row_of[name] = row
    heights = [sum(boxes[n].height for n in col) + GAP_Y * (len(col) - 1) for col in columns]
    widths = [max(boxes[n].width for n in col) for col in columns]
    height = max(heights)
    out = _Box(sum(widths) + GAP_X * (len(columns) - 1), height)
    x = 0
    for index, column in enumerate(columns):
        y = (height - heights[index]) // 2  # centred: a fork and its join line up
        for name in column:
            box = boxes[name]
            dx = x + (widths[index] - box.width) // 2
            placed = box.moved(dx, y)
            placed[0].update(layer=index, row=int(row_of[name]))
            out.nodes += placed
            out.edges += box.edges
            y += box.height + GAP_Y
        x += widths[index] + GAP_X
    by_name = {s.name: s for s in steps}
    for name in names:
        join = by_name[name].join
        label = None
        if len(inside[name]) > 1 and join.mode != "all":
            label = join.mode if join.mode != "first" else f"first {join.count}"
        out.edges += [{"source": d, "target": name, "lane": lane, "join": label} for d in inside[name]]
    return out


def _layers(names: list[str], inside: dict[str, list[str]]) -> dict[str, int]:
    """Longest path from a root; a cycle (rejected by validation anyway) is cut where it closes."""
    layer: dict[str, int] = {}
    visiting: set[str] = set()

    def depth(name: str) -> int:
        if name in layer:
            return layer[name]
        if name in visiting:
            return 0
        visiting.add(name)
        layer[name] = 1 + max((depth(d) for d in inside[name]), default=-1)
        visiting.discard(name)
        return layer[name]

    for name in names:
        depth(name)
    return layer


def _node(step: Step, *, parent: str | None, composite: str | None, lane: str) -> dict[str, Any]:
    return {
        "id": step.name, "type": step.type, "label": step.name, "detail": _detail(step),
        "description": step.description, "condition": _bare(step.condition) if step.condition else None, "parent": parent, "composite": composite,
        "lane": lane, "group": bool(step.inner_blocks), "layer": 0, "row": 0, "x": 0, "y": 0,
        "width": NODE_WIDTH, "height": NODE_HEIGHT,
    }


def _step_box(step: Step, *, parent: str | None, composite: str | None, lane: str) -> _Box:
    node = _node(step, parent=parent, composite=composite, lane=lane)
    config = step.config
    if isinstance(config, SwitchConfig):
        cases = [(case.label(i), case.when, case.steps) for i, case in enumerate(config.cases)]
        if config.default:
            cases.append(("default", None, config.default))
        inner = [_case_box(step.name, label, when, block, lane) for label, when, block in cases]
    elif step.inner_blocks:
        inner = [_block(step.inner_blocks[0], parent=step.name, composite=step.name, lane=lane)]
    else:
        return _Box(NODE_WIDTH, NODE_HEIGHT, [node])
    return _group(node, inner)


def _case_box(switch: str, label: str, when: str | None, steps: tuple[Step, ...], lane: str) -> _Box:
    case_id = f"{switch}::{label}"
    node = {
        "id": case_id, "type": "case", "label": label, "detail": f"when {_bare(when)}" if when else "otherwise",
        "description": None, "condition": when, "parent": switch, "composite": switch, "lane": lane,
        "group": True, "layer": 0, "row": 0, "x": 0, "y": 0, "width": NODE_WIDTH, "height": NODE_HEIGHT,
    }
    return _group(node, [_block(steps, parent=case_id, composite=switch, lane=lane)])


def _group(node: dict[str, Any], inner: list[_Box]) -> _Box:
    """`node` as a box around the inner boxes, stacked, below a header line."""
    width = max([NODE_WIDTH] + [b.width + 2 * PAD for b in inner])
    out = _Box(width, 0, [node])
    y = HEADER
    for box in inner:
        out.nodes += box.moved(PAD, y)
        out.edges += box.edges
        y += box.height + GAP_Y // 2
    out.height = y - GAP_Y // 2 + PAD
    node.update(width=width, height=out.height)
    return out


def _bare(expression: str) -> str:
    """`{{ input.amount > 0 }}` -> `input.amount > 0`: a condition reads better without its braces."""
    text = expression.strip()
    if text.startswith("{{") and text.endswith("}}") and text.count("{{") == 1:
        return text[2:-2].strip()
    return text


def _detail(step: Step) -> str:
    """One short line under the step's name: what it does."""
    c = step.config
    if isinstance(c, ServiceCallConfig):
        return f"{c.method} {c.service}{c.endpoint}"
    if isinstance(c, ValidationConfig):
        return f"{len(c.validation_rules)} rule{'s' if len(c.validation_rules) != 1 else ''}"
    if isinstance(c, WaitForEventConfig):
        what = f"signal {c.signal}" if c.signal else f"event {c.event_type}"
        return what + (f", timeout {format_duration_ms(c.timeout_ms)}" if c.timeout_ms else "")
    if isinstance(c, DelayConfig):
        return f"sleep {format_duration_ms(c.duration_ms)}" if c.duration_ms is not None else f"until {c.until}"
    if isinstance(c, SubWorkflowConfig):
        return f"runs {c.workflow}@{c.version or 'latest'}"
    if isinstance(c, ForEachConfig):
        return f"for each item, {c.concurrency} at a time"
    if isinstance(c, LoopConfig):
        test = f"while {_bare(c.while_)}" if c.while_ else f"until {_bare(c.until)}" if c.until else "repeat"
        return test + (f", at most {c.max_iterations}" if c.max_iterations else "")
    if isinstance(c, SwitchConfig):
        return f"{len(c.cases)} case{'s' if len(c.cases) != 1 else ''}" + (" + default" if c.default else "")
    return step.type


# -- the route ------------------------------------------------------------------------------------

router = APIRouter(prefix="/api/v1/definitions", tags=["definitions"], responses=ERROR_RESPONSES)
_CACHE: OrderedDict[tuple[str, str, str], dict[str, Any]] = OrderedDict()  # (name, version, digest) -> layout
_CACHE_SIZE = 256
_CACHE_LOCK = threading.Lock()  # routes run in a thread pool


@router.get("/{name}/versions/{version}/graph", response_model=DefinitionGraph,
            summary="A definition's steps laid out as a graph",
            responses={404: error_doc("No such definition (code not_found)")},
            description="The steps of one registered version as a layered DAG, with coordinates: nodes "
                        "(id = step name; `case` nodes `<switch>::<case>` group a switch's cases), their "
                        "column (`layer`) and `row`, the enclosing group (`parent`), the composite step "
                        "(`composite`), the lane (`main` or `compensation`), and edges from the ordering "
                        "rules (depends_on, sequence, parallel runs; `join` names a join other than all).")
def definition_graph(name: str = Path(max_length=300), version: str = Path(max_length=100),
                     ctx: ApiContext = Depends(context), key: ApiKey = Depends(READER)) -> Any:
    with ctx.connection() as conn:
        row = conn.execute("SELECT source, digest FROM workflow_definitions WHERE name = %s AND version = %s",
                           (name, version)).fetchone()
    if row is None:
        raise ApiError(404, "not_found", f"definition {name!r} version {version!r} is not registered "
                                         "(in the projection)")
    cache_key = (name, version, row["digest"])  # the digest names the content: any schema, any database
    with _CACHE_LOCK:
        if cache_key in _CACHE:
            _CACHE.move_to_end(cache_key)
            return _CACHE[cache_key]
    try:
        defn = load_definition_source(row["source"], file=f"{name}@{version}")
    except DefinitionError as exc:  # registered by an older orchestrator whose language differed
        raise ApiError(422, "invalid", f"definition {name}@{version} cannot be read by this version: "
                                       f"{exc.problems[0] if exc.problems else exc}",
                       [str(p) for p in exc.problems]) from None
    layout = layout_definition(defn)
    with _CACHE_LOCK:
        _CACHE[cache_key] = layout
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return layout
