"""Triggers (pure): which definitions an external event or a schedule starts, with which id and input."""

from __future__ import annotations

import json
import re
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.loading import load_definition_source
from orchestrator.core.messages import ExternalEvent, StartWorkflow
from orchestrator.core.triggers import (
    ActiveTrigger,
    TriggerError,
    TriggerIndex,
    event_execution_id,
    schedule_execution_id,
    start_for_event,
    start_for_schedule,
)


def definition(name: str = "orders", version: str = "1", triggers: list[dict] | None = None):
    doc = {
        "apiVersion": "workflow/v1", "kind": "Workflow",
        "metadata": {"name": name, "version": version},
        "spec": {"steps": [{"name": "pause", "type": "delay", "config": {"duration": "1s"}}],
                 "triggers": triggers or []},
    }
    return load_definition_source(json.dumps(doc), file=f"{name}.json")


def event(event_id: str = "ev-1", event_type: str = "order.paid", data=None, source: str | None = "shop"):
    data = {"order_id": "o-1", "customer": {"tier": "gold"}, "amount": 42} if data is None else data
    return ExternalEvent(event_id, event_type, data, 1_700_000_000_000, source)


PAID = {"name": "on_paid", "event": "order.paid", "input": {"order": "{{ event.data.order_id }}"}}


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


# -- matching ------------------------------------------------------------------------------


def test_an_event_of_the_trigger_type_starts_the_declaring_workflow_at_its_version():
    index = TriggerIndex.of([definition(triggers=[PAID])])
    outcome = index.for_event(event())
    assert outcome.errors == ()
    assert outcome.starts == (StartWorkflow("orders-on_paid-ev-1", "orders", "1", {"order": "o-1"},
                                            "trigger:on_paid"),)


def test_events_of_another_type_start_nothing():
    index = TriggerIndex.of([definition(triggers=[PAID])])
    assert index.for_event(event(event_type="order.cancelled")).starts == ()
    assert index.for_event(event(event_type="order.paid.v2")).matched == 0


@pytest.mark.parametrize("filter_, matches", [
    ({}, True),
    ({"order_id": "o-1"}, True),
    ({"customer.tier": "gold"}, True),  # dotted names walk into objects
    ({"customer.tier": "silver"}, False),
    ({"amount": 42.0}, True),  # JSON numbers: 42 equals 42.0
    ({"amount": "42"}, False),  # but not the string
    ({"missing": None}, False),  # a missing field matches nothing, not even null
    ({"order_id": "o-1", "amount": 41}, False),  # every field must match
])
def test_a_filter_must_equal_the_event_data_field_by_field(filter_, matches):
    index = TriggerIndex.of([definition(triggers=[{**PAID, "filter": filter_}])])
    assert bool(index.for_event(event()).starts) is matches


def test_only_the_latest_version_of_each_workflow_has_active_triggers_in_version_order():
    old = definition(version="1.9", triggers=[PAID])
    new = definition(version="1.10", triggers=[{**PAID, "name": "paid_again"}])
    plain = definition(version="2-rc", triggers=[])  # after 1.10: its first part, 2, is greater
    index = TriggerIndex.of([new, old])
    [start] = index.for_event(event()).starts
    assert (start.workflow_version, start.requested_by) == ("1.10", "trigger:paid_again")
    assert TriggerIndex.of([old, new, plain]).for_event(event()).starts == ()  # 2-rc declares none


def test_one_event_starts_every_workflow_whose_trigger_matches_each_with_its_own_id():
    index = TriggerIndex.of([
        definition("orders", triggers=[PAID]),
        definition("invoices", triggers=[{"name": "bill", "event": "order.paid"},
                                         {"name": "gold_only", "event": "order.paid",
                                          "filter": {"customer.tier": "gold"}}]),
        definition("refunds", triggers=[{"name": "refund", "event": "order.refunded"}]),
    ])
    ids = [s.execution_id for s in index.for_event(event()).starts]
    assert sorted(ids) == ["invoices-bill-ev-1", "invoices-gold_only-ev-1", "orders-on_paid-ev-1"]


def test_schedule_triggers_are_listed_apart_from_event_triggers():
    index = TriggerIndex.of([definition(triggers=[PAID, {"name": "nightly", "schedule": "0 2 * * *",
                                                         "timezone": "Europe/Berlin"}])])
    assert [a.key for a in index.schedules] == ["orders/nightly"]
    assert [a.name for a in index.events] == ["on_paid"]


# -- ids -----------------------------------------------------------------------------------


def test_the_same_event_twice_gives_the_same_start():
    index = TriggerIndex.of([definition(triggers=[PAID])])
    assert index.for_event(event()) == index.for_event(event())
    assert index.for_event(event("ev-2")).starts[0].execution_id == "orders-on_paid-ev-2"


def test_an_unsafe_or_long_event_id_is_replaced_by_its_digest():
    assert event_execution_id("orders", "on_paid", "2b1f-uuid.7:x") == "orders-on_paid-2b1f-uuid.7:x"
    slash = event_execution_id("orders", "on_paid", "a/b c")
    assert re.fullmatch(r"orders-on_paid-sha-[0-9a-f]{32}", slash)
    assert slash == event_execution_id("orders", "on_paid", "a/b c")  # deterministic
    assert event_execution_id("orders", "on_paid", "x" * 101).startswith("orders-on_paid-sha-")
    # an id that looks like a digest is hashed too, so no raw id can take a digest's place
    assert event_execution_id("orders", "on_paid", "sha-abc") != "orders-on_paid-sha-abc"


SAFE_ID = re.compile(r"^[A-Za-z0-9_.:-]+$")


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1, max_size=120), st.text(min_size=1, max_size=120))
def test_event_execution_ids_are_safe_and_tell_event_ids_apart(a, b):
    ia, ib = event_execution_id("orders", "on_paid", a), event_execution_id("orders", "on_paid", b)
    assert SAFE_ID.match(ia) and len(ia) <= len("orders-on_paid-") + 100
    assert (ia == ib) == (a == b)


def test_a_schedule_execution_id_names_the_nominal_time_in_utc():
    t = ms("2026-11-27T03:00:00+01:00")
    assert schedule_execution_id("nightly-report", "nightly", t) == "nightly-report-nightly-20261127T020000Z"


# -- input -----------------------------------------------------------------------------------


def test_the_input_mapping_sees_the_event_and_keeps_types():
    mapping = {"order": "{{ event.data.order_id }}", "amount": "{{ event.data.amount }}",
               "customer": "{{ event.data.customer }}", "what": "{{ event.type }} #{{ event.id }} from {{ event.source }}",
               "at": "{{ event.occurred_at }}", "fixed": [1, "two"]}
    index = TriggerIndex.of([definition(triggers=[{**PAID, "input": mapping}])])
    [start] = index.for_event(event()).starts
    assert start.input == {"order": "o-1", "amount": 42, "customer": {"tier": "gold"},
                           "what": "order.paid #ev-1 from shop", "at": 1_700_000_000_000, "fixed": [1, "two"]}


def test_without_an_input_mapping_the_input_is_empty():
    [start] = TriggerIndex.of([definition(triggers=[{"name": "t", "event": "order.paid"}])]).for_event(event()).starts
    assert start.input == {}


def test_an_input_that_cannot_be_rendered_is_an_error_naming_workflow_trigger_and_field():
    trigger = {**PAID, "input": {"order": "{{ event.data.order_id }}", "who": {"tier": "{{ event.data.buyer.tier }}"}}}
    index = TriggerIndex.of([definition(triggers=[trigger, {"name": "fine", "event": "order.paid"}])])
    outcome = index.for_event(event())
    [error] = outcome.errors
    assert [s.requested_by for s in outcome.starts] == ["trigger:fine"]  # the other trigger still starts
    assert (error.workflow, error.version, error.trigger, error.where) == ("orders", "1", "on_paid", "input.who.tier")
    assert "buyer" in error.message
    assert error.reason.startswith("workflow 'orders' version '1' trigger 'on_paid': cannot start an execution: "
                                   "input.who.tier: ")


def test_a_schedule_start_sees_the_trigger_and_its_nominal_time_in_the_zone():
    d = definition("nightly-report", triggers=[{
        "name": "nightly", "schedule": "0 3 * * *", "timezone": "Europe/Berlin",
        "input": {"day": "{{ schedule.nominal_time[:10] }}", "at": "{{ schedule.nominal_time }}",
                  "ms": "{{ schedule.nominal_time_ms }}", "by": "{{ schedule.trigger }}"}}])
    [active] = TriggerIndex.of([d]).schedules
    t = ms("2026-11-27T03:00:00+01:00")
    start = start_for_schedule(active, t)
    assert start == StartWorkflow("nightly-report-nightly-20261127T020000Z", "nightly-report", "1",
                                  {"day": "2026-11-27", "at": "2026-11-27T03:00:00+01:00", "ms": t, "by": "nightly"},
                                  "trigger:nightly")
    assert start_for_schedule(active, t) == start


def test_a_schedule_input_that_cannot_be_rendered_is_an_error():
    d = definition(triggers=[{"name": "nightly", "schedule": "0 3 * * *", "input": {"x": "{{ schedule.nope }}"}}])
    [active] = TriggerIndex.of([d]).schedules
    error = start_for_schedule(active, 0)
    assert isinstance(error, TriggerError) and error.where == "input.x"


def test_triggers_that_validation_refuses_are_left_out():
    from orchestrator.core.definition import Trigger

    d = definition(triggers=[])
    both = Trigger(name="both", event="order.paid", schedule="0 3 * * *")
    neither = Trigger(name="neither")
    broken = d.model_copy(update={"spec": d.spec.model_copy(update={"triggers": (both, neither)})})
    index = TriggerIndex.of([broken])
    assert index.events == () and index.schedules == ()
    assert isinstance(start_for_event(ActiveTrigger("orders", "1", 0, Trigger(name="t", event="x")), event("e")),
                      StartWorkflow)


# -- the command line and the role's registration ------------------------------------------------


def registered(name: str, version: str, triggers: list[dict]):
    from orchestrator.core.messages import DefinitionRegistered

    source = json.dumps({"apiVersion": "workflow/v1", "kind": "Workflow", "metadata": {"name": name, "version": version},
                         "spec": {"steps": [{"name": "pause", "type": "delay", "config": {"duration": "1s"}}],
                                  "triggers": triggers}})
    return DefinitionRegistered(name, version, source, "json", "digest", 0)


def test_triggers_list_rows_show_the_latest_versions_triggers_next_time_and_last_fired():
    from orchestrator.cli.triggers import trigger_rows
    from orchestrator.core.messages import ScheduleFired

    nightly = {"name": "nightly", "schedule": "0 2 * * *", "timezone": "Europe/Berlin", "catch_up": "all",
               "max_catch_up": 7}
    found = [registered("report", "1", [nightly]), registered("report", "1.1", [{**nightly, "catch_up": "skip"}]),
             registered("orders", "3", [{**PAID, "filter": {"tier": "gold"}}])]
    now = ms("2026-11-27T02:00:00+01:00")
    fired = ScheduleFired("report", "nightly", now - 86_400_000, "report-nightly-20261126T010000Z", now - 86_399_000)
    rows = trigger_rows(found, now, {"report/nightly": fired})
    assert rows == [
        {"workflow": "orders", "version": "3", "trigger": "on_paid", "kind": "event", "event": "order.paid",
         "filter": {"tier": "gold"}},
        {"workflow": "report", "version": "1.1", "trigger": "nightly", "kind": "schedule", "schedule": "0 2 * * *",
         "timezone": "Europe/Berlin", "catch_up": "skip", "max_catch_up": 7,
         "next_fire_time": "2026-11-28T02:00:00+01:00",
         "last_fired": {"nominal_time": "2026-11-26T01:00:00.000Z", "execution_id": "report-nightly-20261126T010000Z",
                        "fired_at": "2026-11-26T01:00:01.000Z"}},
    ]


def test_the_triggers_role_is_registered_for_run():
    from orchestrator.cli.run import ROLES, _entry
    from orchestrator.runtime.triggers import run_triggers

    assert "triggers" in ROLES and _entry("triggers") is run_triggers
