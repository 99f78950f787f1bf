"""Validation of the control-flow language: switch, loop, for_each, workflow and
delay steps, joins, `cancel_on_signal`, triggers, and what templates inside
blocks may read. Every problem names the file, the step and the field."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from orchestrator.core.loading import DefinitionError, load_definition_source
from orchestrator.core.validation import Problem, check_definition
from orchestrator.definitions_io import load_definition_file
from orchestrator.runtime.services import ServiceRegistry

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

HEAD = """\
apiVersion: workflow/v1
kind: Workflow
metadata: {name: orders, version: "1"}
spec:
  input:
    schema:
      type: object
      properties: {order_id: {type: string}, lines: {type: array}}
"""

# Every new construct, used correctly.
EVERYTHING = """\
triggers:
  - name: on_order
    event: order.placed
    filter: {region: eu}
    input: {order_id: "{{ event.data.id }}", lines: "{{ event.data.lines | default([]) }}"}
  - name: nightly
    schedule: "0 2 * * 1-5"
    timezone: Europe/Paris
    catch_up: all
    max_catch_up: 5
    input: {order_id: "{{ schedule.trigger }}-{{ schedule.nominal_time_ms }}"}
steps:
  - name: fetch
    type: service_call
    config: {service: orders, endpoint: "/orders/{{ input.order_id }}", method: GET}
    output: {lines: "{{ response.lines }}", big: "{{ response.total > 100 }}"}
  - name: route
    type: switch
    config:
      cases:
        - name: big
          when: "{{ steps.fetch.output.big }}"
          steps:
            - name: review
              type: wait_for_event
              config: {signal: approved, timeout: 1h}
              on_timeout: {action: continue}
            - name: note
              type: service_call
              config: {service: orders, endpoint: /notes, payload: {ok: "{{ steps.review.output }}", l: "{{ steps.fetch.output.lines }}"}}
        - when: steps.fetch.completed
          steps:
            - name: cool_off
              type: delay
              config: {duration: 5m}
      default:
        - name: log
          type: service_call
          config: {service: orders, endpoint: /log}
  - name: pay_all
    type: for_each
    config:
      items: "{{ steps.fetch.output.lines }}"
      concurrency: 3
      on_item_failure: collect
      tolerated_failures: 1
      steps:
        - name: charge
          type: service_call
          config: {service: payments, endpoint: /charge, payload: {line: "{{ item }}", n: "{{ index }}", t: "{{ secrets.PAY }}", h: "{{ hash(input.order_id) }}"}}
          output: {id: "{{ response.id }}", n: "{{ index }}"}
        - name: receipt
          type: workflow
          when: "{{ item.amount > 0 }}"
          config: {workflow: receipts, version: latest, input: {charge: "{{ steps.charge.output.id }}", line: "{{ item }}", route: "{{ steps.route.output }}"}}
        - name: tries
          type: loop
          config:
            max_iterations: 3
            while: "{{ index < 2 and steps.tries.iterations | length < 2 and steps.charge.completed }}"
            steps:
              - name: ping
                type: service_call
                config: {service: payments, endpoint: "/ping/{{ index }}", payload: {last: "{{ steps.tries.iterations }}", c: "{{ steps.charge.output.id }}"}}
  - name: each_line
    type: for_each
    depends_on: [fetch]
    config:
      items: ["a", "{{ input.order_id }}"]
      step:
        name: tag
        type: service_call
        config: {service: orders, endpoint: "/tag/{{ item }}"}
  - name: poll
    type: loop
    depends_on: [route, pay_all]
    config:
      max_iterations: 10
      until: "{{ steps.check.output.done or index >= 5 or steps.poll.iterations | length > 8 }}"
      steps:
        - name: wait_a_bit
          type: delay
          config: {duration: 30s}
        - name: check
          type: service_call
          cancel_on_signal: stop_polling
          config: {service: orders, endpoint: "/status/{{ index }}", query: {r: "{{ steps.route.output }}", w: "{{ steps.wait_a_bit.status }}"}}
          output: {done: "{{ response.done }}"}
  - name: ship_fast
    type: service_call
    parallel: true
    config: {service: shipping, endpoint: /fast}
  - name: ship_slow
    type: service_call
    parallel: true
    cancel_on_signal: hurry
    config: {service: shipping, endpoint: /slow}
  - name: shipped
    type: delay
    join: {first: 1, rest: cancel}
    config: {until: "2030-01-01T09:00:00Z"}
  - name: settle
    type: delay
    depends_on: [shipped, each_line]
    join: all_completed
    config: {until: "{{ steps.poll.output.check.done }}"}
  - name: announce
    type: service_call
    depends_on: [settle, poll, ship_fast]
    join: {first: 2, rest: ignore}
    config: {service: orders, endpoint: /done, payload: {tries: "{{ steps.poll.iterations | length }}"}}
compensation:
  steps:
    - name: refund
      type: service_call
      condition: "{{ steps.pay_all.completed }}"
      config: {service: payments, endpoint: /refund, payload: {charges: "{{ steps.pay_all.output }}"}}
    - name: pause
      type: delay
      config: {duration: 1s}
output:
  mapping: {charges: "{{ steps.pay_all.output }}", polls: "{{ steps.poll.iterations }}", route: "{{ steps.route.output }}"}
"""

SERVICES = {"orders", "payments", "shipping"}


def problems(body: str, *, services: set[str] | None = None) -> list[Problem]:
    """Problems of HEAD + `body` (indented under spec); [] when it loads."""
    text = HEAD + textwrap.indent(textwrap.dedent(body), "  ")
    try:
        load_definition_source(text, file="wf.yaml", known_services=services)
    except DefinitionError as exc:
        assert exc.problems, "a DefinitionError always lists its problems"
        return exc.problems
    return []


def only(body: str, **kwargs: object) -> Problem:
    found = problems(body, **kwargs)  # type: ignore[arg-type]
    assert len(found) == 1, "\n".join(map(str, found))
    return found[0]


def expect(body: str, step: str | None, field: str, fragment: str) -> Problem:
    p = only(body)
    assert (p.file, p.step, p.field) == ("wf.yaml", step, field), str(p)
    assert fragment in p.message, str(p)
    return p


def call(name: str, extra: str = "", endpoint: str = "/x", indent: int = 2) -> str:
    """A service_call step as a list item, indented by `indent` spaces."""
    text = f"- name: {name}\n  type: service_call\n  config: {{service: svc, endpoint: '{endpoint}'}}\n"
    if extra:
        text += textwrap.indent(textwrap.dedent(extra).strip(), "  ") + "\n"
    return textwrap.indent(text, " " * indent)


def loop(name: str, inner: str, config: str = "max_iterations: 3", extra: str = "") -> str:
    text = f"  - name: {name}\n    type: loop\n"
    if extra:
        text += textwrap.indent(textwrap.dedent(extra).strip(), "    ") + "\n"
    text += "    config:\n" + textwrap.indent(textwrap.dedent(config).strip(), "      ") + "\n"
    return text + "      steps:\n" + inner


def for_each(name: str, inner: str, items: str = "'{{ input.lines }}'", extra: str = "") -> str:
    text = f"  - name: {name}\n    type: for_each\n"
    if extra:
        text += textwrap.indent(textwrap.dedent(extra).strip(), "    ") + "\n"
    return text + f"    config:\n      items: {items}\n      steps:\n" + inner


INNER = 8  # indentation of a block's steps under `config: steps:` of a top-level step


# -- every construct, used well ---------------------------------------------------


def test_every_new_construct_validates_cleanly() -> None:
    assert problems(EVERYTHING, services=SERVICES) == []
    defn = load_definition_source(HEAD + textwrap.indent(EVERYTHING, "  "), file="wf.yaml")
    assert check_definition(defn, file="wf.yaml", known_services=SERVICES) == []
    assert {"review", "cool_off", "log", "charge", "ping", "tag", "check"} <= set(defn.steps_by_name)


def test_every_example_validates() -> None:
    services = set(ServiceRegistry.from_file(EXAMPLES / "services.yaml").names())
    files = [p for p in sorted(EXAMPLES.glob("*.yaml")) if p.name != "services.yaml"]
    assert files
    for path in files:
        defn = load_definition_file(path, known_services=services)
        assert check_definition(defn, file=path.name, known_services=services) == [], path.name


# -- switch -----------------------------------------------------------------------


def test_switch_needs_a_case() -> None:
    p = expect("steps:\n  - name: route\n    type: switch\n    config: {default: [{name: d, type: delay, config: {duration: 1s}}]}\n",
               "route", "config.cases", "a switch needs at least one case in config.cases")
    assert str(p) == "wf.yaml:12: step 'route': config.cases: a switch needs at least one case in config.cases"
    expect("steps:\n  - name: route\n    type: switch\n    config: {}\n", "route", "config.cases", "at least one case")


def test_switch_case_names_are_unique_and_cases_need_when() -> None:
    body = """\
        steps:
          - name: route
            type: switch
            config:
              cases:
                - {name: case1, when: "{{ input.order_id }}"}
                - {when: "{{ input.lines }}"}
        """
    expect(body, "route", "config.cases[1].name", "duplicate case name 'case1'")
    body = "steps:\n  - name: route\n    type: switch\n    config: {cases: [{steps: []}]}\n"
    expect(body, "route", "config.cases[0].when", "missing required field 'when'")
    body = "steps:\n  - name: route\n    type: switch\n    config: {cases: [{when: '{{ input.order_id }} {{ input.lines }}'}]}\n"
    expect(body, "route", "config.cases[0].when", "a condition must be a single expression")
    body = "steps:\n  - name: route\n    type: switch\n    config: {cases: [{when: '{{ hash(input.order_id) }}'}]}\n"
    expect(body, "route", "config.cases[0].when", "hash() is only available in a step's request config")


# -- loop -------------------------------------------------------------------------


def test_loop_needs_a_bound_and_a_body() -> None:
    body = "steps:\n" + loop("poll", call("check", indent=INNER), config="until: '{{ steps.check.completed }}'")
    p = expect(body, "poll", "config.max_iterations", "a loop needs config.max_iterations (its bound)")
    assert str(p).startswith("wf.yaml:12: step 'poll': config.max_iterations: ")  # its config
    expect("steps:\n  - name: poll\n    type: loop\n    config: {max_iterations: 3}\n",
           "poll", "config.steps", "a loop needs at least one step in config.steps")
    expect("steps:\n" + loop("poll", call("check", indent=INNER), config="max_iterations: 0"),
           "poll", "config.max_iterations", "greater than or equal to 1")


def test_loop_takes_while_or_until_not_both() -> None:
    config = "max_iterations: 3\nwhile: '{{ index < 2 }}'\nuntil: '{{ index > 1 }}'"
    expect("steps:\n" + loop("poll", call("check", indent=INNER), config=config), "poll", "config.until", "not both")
    assert problems("steps:\n" + loop("poll", call("check", indent=INNER))) == []  # a counted loop


# -- for_each ---------------------------------------------------------------------


@pytest.mark.parametrize(("items", "kind"), [
    ("{a: 1}", "not a mapping"),
    ("3", "not a number (3)"),
    ("true", "not a boolean"),
    ("lines", "not text ('lines')"),
])
def test_for_each_rejects_items_that_are_not_a_list(items: str, kind: str) -> None:
    p = expect("steps:\n" + for_each("each", call("c", indent=INNER), items=items), "each", "config.items", kind)
    assert p.message.startswith("a for_each runs over a list, ")
    assert str(p).startswith("wf.yaml:13: step 'each': config.items: ")


def test_for_each_items() -> None:
    expect("steps:\n  - name: each\n    type: for_each\n    config: {step: {name: c, type: delay, config: {duration: 1s}}}\n",
           "each", "config.items", "a for_each needs config.items")
    expect("steps:\n" + for_each("each", call("c", indent=INNER), items="'lines: {{ input.lines }}'"),
           "each", "config.items", "mixed text renders as a string, not a list")
    assert problems("steps:\n" + for_each("each", call("c", indent=INNER), items="[1, 2, '{{ input.order_id }}']")) == []
    expect("steps:\n" + for_each("each", call("c", indent=INNER), items="'{{ item }}'"),
           "each", "config.items", "'item' is only available inside a for_each body")
    expect("steps:\n" + for_each("each", call("c", indent=INNER), items="['{{ secrets.X }}']"),
           "each", "config.items[0]", "'secrets' are only available")


def test_for_each_takes_step_or_steps() -> None:
    both = for_each("each", call("c", indent=INNER)) + "      step: {name: d, type: delay, config: {duration: 1s}}\n"
    expect("steps:\n" + both, "each", "config.steps", "either step (one step per item) or steps (a block), not both")
    expect("steps:\n  - name: each\n    type: for_each\n    config: {items: [1]}\n",
           "each", "config.steps", "a for_each needs config.step or at least one step in config.steps")
    expect("steps:\n  - name: each\n    type: for_each\n    config: {items: [1], steps: []}\n",
           "each", "config.steps", "needs config.step or at least one step")


def test_tolerated_failures_only_with_collect() -> None:
    body = "steps:\n  - name: each\n    type: for_each\n    config:\n      items: [1]\n      tolerated_failures: 2\n" \
           "      step: {name: c, type: delay, config: {duration: 1s}}\n"
    expect(body, "each", "config.tolerated_failures", "only used with on_item_failure: collect")
    assert problems(body.replace("tolerated_failures: 2", "tolerated_failures: 2\n      on_item_failure: collect")) == []


# -- workflow and delay steps -----------------------------------------------------


def test_workflow_step() -> None:
    expect("steps:\n  - name: again\n    type: workflow\n    config: {workflow: orders}\n",
           "again", "config.workflow", "cannot start 'orders' itself (unbounded recursion)")
    expect("steps:\n  - name: sub\n    type: workflow\n    config: {input: {}}\n",
           "sub", "config.workflow", "missing required field 'workflow'")
    expect("steps:\n  - name: sub\n    type: workflow\n    config: {workflow: child, input: {t: '{{ secrets.T }}'}}\n",
           "sub", "config.input.t", "'secrets' are only available")
    expect("steps:\n  - name: sub\n    type: workflow\n    config: {workflow: child, input: {h: '{{ hash(input.order_id) }}'}}\n",
           "sub", "config.input.h", "hash() is only available in a step's request config")
    assert problems("steps:\n  - name: sub\n    type: workflow\n    config: {workflow: child, version: 2, input: '{{ input }}'}\n") == []


def test_delay_takes_duration_or_until() -> None:
    expect("steps:\n  - name: nap\n    type: delay\n    config: {}\n", "nap", "config", "exactly one of duration or until")
    expect("steps:\n  - name: nap\n    type: delay\n    config: {duration: 1s, until: '2030-01-01T00:00:00Z'}\n",
           "nap", "config", "exactly one of duration or until")
    expect("steps:\n  - name: nap\n    type: delay\n    config: {until: tomorrow}\n",
           "nap", "config.until", "'tomorrow' is not a time")
    expect("steps:\n  - name: nap\n    type: delay\n    config: {until: '2030-01-01T00:00:00'}\n",
           "nap", "config.until", "with a zone")
    expect("steps:\n  - name: nap\n    type: delay\n    config: {until: '{{ steps.nap.output }}'}\n",
           "nap", "config.until", "a step cannot read its own result")
    expect("steps:\n  - name: nap\n    type: delay\n    config: {until: '{{ secrets.WHEN }}'}\n",
           "nap", "config.until", "'secrets' are only available")


# -- joins and cancel_on_signal ---------------------------------------------------


def test_join_rules() -> None:
    two = call("a", "depends_on: []") + call("b", "depends_on: []")
    expect("steps:\n" + two + call("c", "depends_on: [a, b]\njoin: {first: 3}"),
           "c", "join.count", "join first 3, but the step has only 2 dependencies")
    expect("steps:\n" + call("a") + call("b", "join: any"), "b", "join", "join 'first' needs at least two dependencies")
    expect("steps:\n" + call("a", "join: all_completed"), "a", "join",
           "join 'all_completed' needs at least one dependency, the step has 0 (nothing to join)")
    # after one step, all_completed still means something: skipped unless that step completed
    assert problems("steps:\n" + call("a") + call("b", "join: all_completed")) == []
    expect("steps:\n" + two + call("c", "depends_on: [a, b]\njoin: {mode: all, rest: ignore}"),
           "c", "join.rest", "rest is only used with join 'first'")
    expect("steps:\n" + two + call("c", "depends_on: [a, b]\njoin: {mode: all_completed, count: 2}"),
           "c", "join.count", "count is only used with join 'first'")
    # after a parallel run, a step joins the whole run
    run = call("a", "parallel: true") + call("b", "parallel: true")
    assert problems("steps:\n" + run + call("c", "join: {first: 1, rest: ignore}")) == []
    assert problems("steps:\n" + two + call("c", "depends_on: [a, b]\njoin: {first: 2}")) == []


def test_cancel_on_signal() -> None:
    assert problems("steps:\n" + call("a", "cancel_on_signal: stop")) == []
    body = "steps:\n" + call("a") + "compensation:\n  steps:\n" + call("undo", "cancel_on_signal: stop")
    expect(body, "undo", "cancel_on_signal", "compensation steps cannot be cancelled by a signal")


# -- compensation steps -----------------------------------------------------------


def test_compensation_steps_are_single_actions() -> None:
    comp = "steps:\n" + call("a") + "compensation:\n  steps:\n"
    expect(comp + "  - name: undo\n    type: workflow\n    config: {workflow: undo}\n",
           "undo", "type", "a compensation step cannot be a workflow step (allowed: service_call, validation, "
                           "wait_for_event, delay)")
    p = only(comp + loop("undo", call("u1", indent=INNER)))
    assert (p.step, p.field) == ("undo", "type") and "cannot be a loop step" in p.message
    expect(comp + call("u1") + call("u2", "join: all_completed"), "u2", "join", "not used in compensation steps")
    assert problems(comp + "  - name: nap\n    type: delay\n    config: {duration: 1s}\n" + call("u1")) == []
    expect(comp + "  - name: nap\n    type: delay\n    config: {}\n", "nap", "config", "exactly one of duration")


# -- triggers ---------------------------------------------------------------------


def trig(text: str) -> str:
    return "triggers:\n" + textwrap.indent(textwrap.dedent(text), "  ") + "steps:\n" + call("a")


def test_triggers() -> None:
    expect(trig("- {name: t, event: e}\n- {name: t, schedule: '* * * * *'}\n"),
           None, "spec.triggers[1].name", "duplicate trigger name 't'")
    expect(trig("- {name: t}\n"), None, "spec.triggers[0]", "trigger 't': give exactly one of event")
    expect(trig("- {name: t, event: e, schedule: '* * * * *'}\n"), None, "spec.triggers[0]", "exactly one of event")
    expect(trig("- {name: t, schedule: '* * * * *', filter: {a: 1}}\n"),
           None, "spec.triggers[0].filter", "filter is only used with event")
    p = expect(trig("- {name: t, schedule: '61 * * * *'}\n"), None, "spec.triggers[0].schedule",
               "trigger 't': invalid cron expression '61 * * * *'")
    assert p.line == 10
    expect(trig("- {name: t, schedule: '0 0 * * * *'}\n"), None, "spec.triggers[0].schedule",
           "a cron expression has five fields")
    expect(trig("- {name: t, schedule: '@daily'}\n"), None, "spec.triggers[0].schedule", "five fields")
    expect(trig("- {name: t, schedule: '0 0 * * *', timezone: Mars/Olympus}\n"),
           None, "spec.triggers[0].timezone", "unknown time zone 'Mars/Olympus'")
    expect(trig("- {name: t, event: e, catch_up: all}\n"), None, "spec.triggers[0].catch_up", "only used with schedule")
    expect(trig("- {name: t, schedule: '0 0 * * *', catch_up: never}\n"), None, "spec.triggers[0].catch_up",
           "is not one of")


def test_trigger_input_sees_only_its_event_or_schedule() -> None:
    expect(trig("- {name: t, event: e, input: {x: '{{ input.order_id }}'}}\n"), None,
           "spec.triggers[0].input.x", "'input' is not available here: a trigger's input sees only 'event'")
    expect(trig("- {name: t, event: e, input: {x: '{{ schedule.nominal_time }}'}}\n"), None,
           "spec.triggers[0].input.x", "sees only 'event'")
    expect(trig("- {name: t, schedule: '0 * * * *', input: {x: '{{ event.data }}'}}\n"), None,
           "spec.triggers[0].input.x", "'event' is not available here: a trigger's input sees only 'schedule'")
    for root in ("steps.a.output", "secrets.X", "execution.id", "item"):
        p = only(trig(f"- {{name: t, schedule: '0 * * * *', input: {{x: '{{{{ {root} }}}}'}}}}\n"))
        assert p.field == "spec.triggers[0].input.x" and "sees only 'schedule'" in p.message
    expect(trig("- {name: t, event: e, input: {x: '{{ hash(event.data) }}'}}\n"), None,
           "spec.triggers[0].input.x", "hash() is only available")


# -- names and ordering across blocks ---------------------------------------------


def test_step_names_are_unique_across_blocks() -> None:
    p = expect("steps:\n" + call("c") + loop("poll", call("c", indent=INNER)), "c", "name",
               "duplicate step name 'c' (names are unique across the whole definition, blocks included)")
    assert p.line == 10  # the first 'c' (a name points at its first place)
    switch = """\
        steps:
          - name: route
            type: switch
            config:
              cases:
                - when: "{{ input.order_id }}"
                  steps: [{name: x, type: delay, config: {duration: 1s}}]
              default: [{name: x, type: delay, config: {duration: 2s}}]
        """
    expect(switch, "x", "name", "duplicate step name 'x'")
    body = "steps:\n" + loop("poll", call("c", indent=INNER)) + "compensation:\n  steps:\n" + call("c")
    expect(body, "c", "name", "compensation step name 'c' is also a main step")


def test_depends_on_stays_inside_its_block() -> None:
    body = "steps:\n" + call("a") + loop("poll", call("c", indent=INNER) + call("d", "depends_on: [a]", indent=INNER))
    expect(body, "d", "depends_on", "step 'a' is in the top-level steps, not in the body of loop 'poll': "
                                    "depends_on names steps of its own block only")
    body = "steps:\n" + loop("poll", call("c", indent=INNER)) + call("after", "depends_on: [c]")
    expect(body, "after", "depends_on", "step 'c' is in the body of loop 'poll', not in the top-level steps: "
                                        "depends_on names steps of its own block only (depend on 'poll' instead)")
    body = "steps:\n" + loop("poll", call("check", indent=INNER) + call("d", "depends_on: [chek]", indent=INNER))
    expect(body, "d", "depends_on", "unknown step 'chek' (did you mean 'check'?)")
    body = "steps:\n" + loop("poll", call("d", "depends_on: [poll]", indent=INNER))
    expect(body, "d", "depends_on", "step 'poll' runs the block this step is in")


def test_cycles_are_found_per_block() -> None:
    inner = call("c", "depends_on: [d]", indent=INNER) + call("d", "depends_on: [c]", indent=INNER)
    p = expect("steps:\n" + loop("poll", inner), "c", "depends_on", "dependency cycle: c -> d -> c")
    assert p.line == 18  # its depends_on
    # same-named order in another block is no cycle: blocks are separate graphs
    assert problems("steps:\n" + call("a") + loop("poll", call("c", indent=INNER) + call("d", indent=INNER))) == []


def test_existing_step_checks_apply_inside_blocks() -> None:
    p = only("steps:\n" + loop("poll", call("c", indent=INNER)), services={"svcs"})
    assert (p.step, p.field, p.message) == ("c", "config.service", "unknown service 'svc' (did you mean 'svcs'?)")
    assert p.line == 17  # its config
    rule = "      - {name: v, type: validation, config: {validation_rules: [{field: order_id, rule: unique}]}}\n"
    expect("steps:\n  - name: each\n    type: for_each\n    config:\n      items: [1]\n      steps:\n  " + rule,
           "v", "config.validation_rules[0].rule", "unknown rule 'unique'")
    expect("steps:\n" + loop("poll", "        - {name: w, type: wait_for_event, config: {timeout: 1h}}\n"),
           "w", "config", "event_type or a signal")
    expect("steps:\n" + loop("poll", call("c", "on_failure: {action: compensate}", indent=INNER)),
           "c", "on_failure.action", "no compensation")
    expect("steps:\n" + loop("poll", call("c", "retry_policy: {initial_delay: 10s, max_delay: 1s}", indent=INNER)),
           "c", "retry_policy", "initial_delay is longer than max_delay")
    expect("steps:\n" + loop("poll", call("c", "join: first", indent=INNER)), "c", "join", "nothing to join")


def test_parse_errors_inside_blocks_name_the_inner_step() -> None:
    body = "steps:\n" + loop("poll", "        - {name: c, type: servce_call, config: {}}\n")
    p = expect(body, "c", "type", "unknown step type 'servce_call'")
    assert p.line == 15
    body = "steps:\n  - name: each\n    type: for_each\n    config:\n      items: [1]\n" \
           "      step: {name: c, type: service_call, config: {endpont: /x, service: s}}\n"
    expect(body, "c", "config.endpont", "unknown field 'endpont' (did you mean 'endpoint'?)")


# -- templates: what a step inside a block may read -------------------------------


def test_a_block_step_reads_its_block_and_what_its_composite_reads() -> None:
    ok = "steps:\n" + call("a") + loop("poll", call("c", endpoint="/{{ steps.a.output }}", indent=INNER)
                                     + call("d", endpoint="/{{ steps.c.output }}/{{ index }}", indent=INNER))
    assert problems(ok) == []
    inner = call("c", "parallel: true", indent=INNER) + call("d", "parallel: true", endpoint="/{{ steps.c.output }}",
                                                                indent=INNER)
    expect("steps:\n" + loop("poll", inner), "d", "config.endpoint", "step 'c' is not upstream of 'd'")
    # a step after the loop is not upstream of the loop, so not of its body
    body = "steps:\n" + loop("poll", call("c", endpoint="/{{ steps.z.output }}", indent=INNER)) + call("z")
    expect(body, "c", "config.endpoint", "step 'z' is not upstream of 'poll' (which runs 'c')")


def test_outside_reads_inner_steps_through_the_composite() -> None:
    body = "steps:\n" + for_each("pay_all", call("charge", indent=INNER)) + call("x", endpoint="/{{ steps.charge.output }}")
    expect(body, "x", "config.endpoint", "step 'charge' is inside for_each 'pay_all': read it through steps.pay_all.output")
    comp = "compensation:\n  steps:\n" + call("undo", endpoint="/{{ steps.charge.status }}")
    expect("steps:\n" + for_each("pay_all", call("charge", indent=INNER)) + comp,
           "undo", "config.endpoint", "read it through steps.pay_all.output")
    out = "output:\n  mapping: {c: '{{ steps.charge.output }}'}\n"
    expect(out + "steps:\n" + for_each("pay_all", call("charge", indent=INNER)),
           None, "spec.output.mapping.c", "step 'charge' is inside for_each 'pay_all'")


def test_nested_blocks() -> None:
    body = """\
        steps:
          - name: outer
            type: for_each
            config:
              items: "{{ input.lines }}"
              steps:
                - name: first
                  type: delay
                  config: {duration: 1s}
                - name: inner
                  type: loop
                  config:
                    max_iterations: 2
                    steps:
                      - name: leaf
                        type: service_call
                        config: {service: s, endpoint: "/{{ steps.first.status }}/{{ index }}/{{ steps.outer.status }}"}
                - name: sibling
                  type: service_call
                  config: {service: s, endpoint: "/{{ steps.leaf.output }}"}
          - name: after
            type: service_call
            config: {service: s, endpoint: "/{{ steps.leaf.output }}"}
        """
    found = {(p.step, p.field, p.message) for p in problems(body)}
    assert found == {
        ("leaf", "config.endpoint", "step 'leaf' runs inside for_each 'outer', which has no result until it ends"),
        ("sibling", "config.endpoint", "step 'leaf' is inside loop 'inner': read it through steps.inner.output"),
        ("after", "config.endpoint", "step 'leaf' is inside for_each 'outer': read it through steps.outer.output"),
    }
    # `item` belongs to the innermost iteration: a loop inside a for_each has only `index`
    p = only(body.replace("{{ steps.outer.status }}", "{{ item }}").replace("steps.leaf.output", "input"))
    assert (p.step, p.field) == ("leaf", "config.endpoint") and "'item' is only available inside a for_each" in p.message


def test_switch_cases_do_not_read_each_other() -> None:
    body = """\
        steps:
          - name: route
            type: switch
            config:
              cases:
                - when: "{{ input.order_id }}"
                  steps: [{name: x, type: delay, config: {duration: 1s}}]
              default:
                - {name: y, type: delay, config: {until: "{{ steps.x.output }}"}}
        """
    expect(body, "y", "config.until", "step 'x' is in case 'case0' of switch 'route', this step in the default of "
                                      "switch 'route': only one of them runs")
    when = body.replace('when: "{{ input.order_id }}"', 'when: "{{ steps.x.completed }}"').replace(
        '"{{ steps.x.output }}"', "'2030-01-01T00:00:00Z'")
    expect(when, "route", "config.cases[0].when", "step 'x' is inside switch 'route' itself")


def test_item_and_index() -> None:
    expect("steps:\n" + call("a", endpoint="/{{ index }}"), "a", "config.endpoint",
           "'index' is only available inside a loop or for_each body")
    expect("steps:\n" + loop("poll", call("c", endpoint="/{{ item }}", indent=INNER)), "c", "config.endpoint",
           "'item' is only available inside a for_each body")
    assert problems("steps:\n" + for_each("each", call("c", "condition: '{{ index > 0 and item }}'",
                                                            endpoint="/{{ item.id }}", indent=INNER))) == []


def test_iterations() -> None:
    expect("steps:\n" + for_each("each", call("c", indent=INNER)) + call("z", endpoint="/{{ steps.each.iterations }}"),
           "z", "config.endpoint", "steps.each.iterations: only loop steps have iterations")
    expect("steps:\n" + call("a") + call("z", endpoint="/{{ steps.a.iterations }}"),
           "z", "config.endpoint", "only loop steps have iterations")
    expect("steps:\n" + loop("poll", call("c", endpoint="/{{ steps.poll.output }}", indent=INNER)),
           "c", "config.endpoint", "step 'c' runs inside loop 'poll', which has no output until it ends "
                                   "(earlier iterations: steps.poll.iterations)")
    expect("steps:\n" + for_each("each", call("c", endpoint="/{{ steps.each.output }}", indent=INNER)),
           "c", "config.endpoint", "step 'c' runs inside for_each 'each', which has no result until it ends")
    p = only("steps:\n" + loop("poll", call("c", indent=INNER)) + call("z", endpoint="/{{ steps.poll.iteratons }}"))
    assert p.message.startswith("steps.poll has no field 'iteratons' (did you mean 'iterations'?)")


def test_loop_conditions() -> None:
    config = "max_iterations: 5\nwhile: '{{ steps.check.completed }}'"
    expect("steps:\n" + loop("poll", call("check", indent=INNER), config=config), "poll", "config.while",
           "step 'check' is inside loop 'poll': read its outputs through steps.poll.iterations")
    config = "max_iterations: 5\nuntil: steps.check.output.done and index > 1"  # bare, like a condition
    assert problems("steps:\n" + loop("poll", call("check", indent=INNER), config=config)) == []
    config = "max_iterations: 5\nuntil: '{{ steps.later.completed }}'"
    expect("steps:\n" + loop("poll", call("check", indent=INNER), config=config) + call("later"),
           "poll", "config.until", "step 'later' is not upstream of 'poll'")
    config = "max_iterations: 5\nwhile: '{{ secrets.X }}'"
    expect("steps:\n" + loop("poll", call("check", indent=INNER), config=config), "poll", "config.while",
           "'secrets' are only available")
    expect("steps:\n" + call("a", "condition: '{{ steps.a.iterations }}'"), "a", "condition",
           "a step cannot read its own result")


def test_items_and_when_see_what_the_composite_sees() -> None:
    body = "steps:\n" + for_each("each", call("c", indent=INNER), items="'{{ steps.z.output }}'") + call("z", "depends_on: []")
    expect(body, "each", "config.items", "step 'z' is not upstream of 'each'")
    body = "steps:\n" + call("a") + for_each("each", call("c", indent=INNER), items="'{{ steps.a.output.list }}'")
    assert problems(body) == []
