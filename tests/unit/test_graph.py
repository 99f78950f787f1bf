"""The console's definition graph: layers from the ordering rules, nested blocks, the compensation lane."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.api.graph import NODE_HEIGHT, NODE_WIDTH, layout_definition
from orchestrator.core.loading import load_definition_source

ROOT = Path(__file__).resolve().parents[2]


def load(path: str):
    return load_definition_source((ROOT / path).read_text(), file=path)


def by_id(graph: dict) -> dict[str, dict]:
    return {n["id"]: n for n in graph["nodes"]}


def edges(graph: dict) -> set[tuple[str, str]]:
    return {(e["source"], e["target"]) for e in graph["edges"]}


def contains(outer: dict, inner: dict) -> bool:
    return (outer["x"] <= inner["x"] and inner["x"] + inner["width"] <= outer["x"] + outer["width"]
            and outer["y"] <= inner["y"] and inner["y"] + inner["height"] <= outer["y"] + outer["height"])


def overlap(a: dict, b: dict) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


def source(steps: str, compensation: str = "") -> str:
    return f"""
apiVersion: workflow/v1
kind: Workflow
metadata: {{name: g, version: "1"}}
spec:
  steps:
{steps}
{compensation}
"""


def call(name: str, extra: str = "") -> str:
    return f"    - {{name: {name}, type: service_call, config: {{service: s, endpoint: /{name}}}{extra}}}"


def test_the_seed_workflow_is_layered_by_its_dependencies() -> None:
    graph = layout_definition(load("examples/user-registration-workflow.yaml"))
    nodes = by_id(graph)
    layers = {name: n["layer"] for name, n in nodes.items() if n["lane"] == "main"}
    assert layers["validate_input"] == 0
    assert layers["create_user_account"] == 1
    # profile and welcome e-mail both follow the account: one column, two rows
    assert layers["create_user_profile"] == layers["send_welcome_email"] == 2
    assert {nodes["create_user_profile"]["row"], nodes["send_welcome_email"]["row"]} == {0, 1}
    assert ("create_user_account", "create_user_profile") in edges(graph)
    assert ("create_user_account", "send_welcome_email") in edges(graph)
    # columns go left to right
    assert nodes["validate_input"]["x"] < nodes["create_user_account"]["x"] < nodes["create_user_profile"]["x"]
    assert nodes["create_user_account"]["detail"] == "POST user-service/api/users"


def test_compensation_steps_get_their_own_lane_below_in_listed_order() -> None:
    defn = load("examples/user-registration-workflow.yaml")
    graph = layout_definition(defn)
    nodes = by_id(graph)
    names = [s.name for s in defn.compensation_steps]
    assert names, "the seed has compensation steps"
    lanes = {lane["id"]: lane for lane in graph["lanes"]}
    assert set(lanes) == {"main", "compensation"}
    for name in names:
        assert nodes[name]["lane"] == "compensation"
        assert nodes[name]["y"] >= lanes["compensation"]["y"]
    main_bottom = max(n["y"] + n["height"] for n in graph["nodes"] if n["lane"] == "main")
    assert main_bottom <= lanes["compensation"]["y"]
    assert set(zip(names, names[1:])) <= edges(graph)
    assert [nodes[n]["layer"] for n in names] == list(range(len(names)))


def test_a_switch_holds_a_group_per_case_with_its_steps_inside() -> None:
    graph = layout_definition(load("examples/patterns/wcp04-exclusive-choice.yaml"))
    nodes = by_id(graph)
    route = nodes["route"]
    assert route["group"] and route["type"] == "switch"
    cases = [n for n in graph["nodes"] if n["type"] == "case"]
    assert [c["id"] for c in cases] == ["route::large", "route::small", "route::default"]
    assert cases[0]["detail"].startswith("when ")
    for case in cases:
        assert case["parent"] == "route" and contains(route, case)
    assert nodes["manager_review"]["parent"] == "route::large"
    assert nodes["manager_review"]["composite"] == "route"
    assert contains(nodes["route::large"], nodes["manager_review"])
    assert contains(nodes["route::large"], nodes["manager_approve"])
    assert ("manager_review", "manager_approve") in edges(graph)
    assert not overlap(nodes["route::large"], nodes["route::small"])


def test_loop_and_for_each_bodies_are_nested_inside_their_step() -> None:
    loop = by_id(layout_definition(load("examples/patterns/wcp21-structured-loop.yaml")))
    assert loop["check_job"]["parent"] == "wait_until_done"
    assert contains(loop["wait_until_done"], loop["check_job"])
    assert contains(loop["wait_until_done"], loop["pause"])
    assert loop["wait_until_done"]["detail"].startswith("until ")
    assert loop["pause"]["condition"]  # `when` shown on the node
    assert loop["start_job"]["x"] < loop["wait_until_done"]["x"] < loop["collect_result"]["x"]

    fan = by_id(layout_definition(load("examples/patterns/fan-out-limit.yaml")))
    assert fan["call"]["parent"] == "fan_out" and contains(fan["fan_out"], fan["call"])
    assert fan["fan_out"]["detail"] == "for each item, 20 at a time"


def test_parallel_runs_fork_and_join_and_join_modes_label_the_edges() -> None:
    steps = "\n".join([
        call("a"),
        call("b", ", parallel: true"),
        call("c", ", parallel: true"),
        call("d", ", parallel: true"),
        call("e", ", join: {first: 2}"),
        call("f", ", depends_on: []"),
    ])
    graph = layout_definition(load_definition_source(source(steps), file="g.yaml"))
    nodes = by_id(graph)
    assert {nodes[n]["layer"] for n in "bcd"} == {1}
    assert sorted(nodes[n]["row"] for n in "bcd") == [0, 1, 2]
    assert nodes["e"]["layer"] == 2 and nodes["f"]["layer"] == 0
    joins = {(e["source"], e["target"]): e["join"] for e in graph["edges"]}
    assert joins[("b", "e")] == joins[("d", "e")] == "first 2"
    assert joins[("a", "b")] is None
    assert ("f", "e") not in joins  # a root of its own


def test_no_two_nodes_of_one_block_overlap_and_the_size_covers_everything() -> None:
    for path in ("examples/user-registration-workflow.yaml", "examples/patterns/wcp04-exclusive-choice.yaml",
                 "examples/patterns/wcp21-structured-loop.yaml", "examples/patterns/wcp20-cancel-case.yaml"):
        graph = layout_definition(load(path))
        nodes = graph["nodes"]
        for n in nodes:
            assert n["width"] >= NODE_WIDTH and n["height"] >= NODE_HEIGHT
            assert 0 <= n["x"] and n["x"] + n["width"] <= graph["width"], (path, n["id"])
            assert 0 <= n["y"] and n["y"] + n["height"] <= graph["height"], (path, n["id"])
        for a in nodes:
            for b in nodes:
                if a["id"] < b["id"] and a["parent"] == b["parent"] and a["lane"] == b["lane"]:
                    assert not overlap(a, b), (path, a["id"], b["id"])
                if b["parent"] == a["id"]:
                    assert contains(a, b), (path, a["id"], b["id"])


@pytest.mark.parametrize("path", sorted(str(p.relative_to(ROOT)) for p in (ROOT / "examples").rglob("*.yaml")
                                        if "services" not in p.name))
def test_every_example_lays_out_with_an_edge_per_dependency(path: str) -> None:
    defn = load(path)
    graph = layout_definition(defn)
    ids = {n["id"] for n in graph["nodes"]}
    assert set(defn.all_steps_by_name) <= ids
    for e in graph["edges"]:
        assert e["source"] in ids and e["target"] in ids
    main_edges = {(e["source"], e["target"]) for e in graph["edges"] if e["lane"] == "main"}
    expected = {(d, name) for name, deps in defn.dependencies.items() for d in deps}
    assert main_edges == expected
