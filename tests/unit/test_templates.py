"""Sandboxed `{{ expr }}` templates: typed results, text, errors naming where, escapes."""

from __future__ import annotations

import time

import pytest

from orchestrator.core.templates import (
    TemplateError,
    evaluate_condition,
    function_names,
    is_single_expression,
    referenced_paths,
    render_value,
)

SCOPE = {
    "input": {"username": "bob", "n": 5, "profile_data": {"city": "Oslo"}, "items": [1, 2], "keys": "k"},
    "steps": {
        "create_user_account": {"output": {"user_id": "u-1"}, "completed": True, "status": "completed"},
        "send_welcome_email": {"output": None, "completed": False, "status": "pending"},
    },
    "response": {"id": 7, "ok": True},
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ input.username }}", "bob"),
        ("  {{ input.profile_data }}\n", {"city": "Oslo"}),
        ("{{ input.n + 1 }}", 6),
        ("{{ response.ok }}", True),
        ("{{ none }}", None),
        ("{{ input.items }}", [1, 2]),
        ("{{ input.items | map('string') | list }}", ["1", "2"]),
        ("{{ {'a': {'b': [1, 2]}} }}", {"a": {"b": [1, 2]}}),
        ("{{ input['username'] | upper }}", "BOB"),
        ("{{ json(input.profile_data) }}", '{"city": "Oslo"}'),
        ("{{ input.profile_data | tojson }}", '{"city": "Oslo"}'),
        ("{{ input.missing | default('x') }}", "x"),
        ("{{ input.items | length }}", 2),
        ("{{ input.keys }}", "k"),  # a field named like a dict method is the field
        ("{{ steps.create_user_account.output.user_id }}", "u-1"),
    ],
)
def test_single_expression_keeps_its_type(template: str, expected: object) -> None:
    assert render_value(template, SCOPE) == expected


def test_mixed_text_renders_a_string() -> None:
    value = "/api/users/{{ steps.create_user_account.output.user_id }}/activate"
    assert render_value(value, SCOPE) == "/api/users/u-1/activate"
    assert render_value("n={{ input.n }} ok={{ response.ok }} none={{ none }} p={{ input.profile_data }}", SCOPE) == (
        'n=5 ok=true none= p={"city": "Oslo"}'
    )
    assert render_value("{% if input.n > 3 %}big{% else %}small{% endif %}", SCOPE) == "big"
    assert render_value("line {{ input.n }}\n", SCOPE) == "line 5\n"


def test_walks_structures_and_leaves_plain_values() -> None:
    payload = {"a": ["{{ input.n }}", "plain", 3, None], "b": {"c": "x{{ input.n }}"}, "d": "no {template}"}
    assert render_value(payload, SCOPE) == {"a": [5, "plain", 3, None], "b": {"c": "x5"}, "d": "no {template}"}


def test_functions_are_supplied_by_the_caller() -> None:
    out = render_value({"h": "{{ hash(input.username) }}"}, SCOPE, functions={"hash": lambda v: f"H({v})"})
    assert out == {"h": "H(bob)"}
    with pytest.raises(TemplateError, match="function 'hash' is not available"):
        render_value("{{ hash(input.username) }}", SCOPE)


def test_errors_name_where_and_what() -> None:
    where = "steps[1] create_user_account: config"
    with pytest.raises(TemplateError) as info:
        render_value({"payload": {"password_hash": "{{ input.pasword }}"}}, SCOPE, where=where)
    assert info.value.where == "steps[1] create_user_account: config.payload.password_hash"
    assert "input has no field 'pasword'" in info.value.message
    assert str(info.value).startswith(where)
    with pytest.raises(TemplateError, match=r"\[1\]") as info:
        render_value({"l": ["ok", "{{ nope }}"]}, SCOPE, where="w")
    assert info.value.where == "w.l[1]"


def test_step_without_result_is_a_clear_error() -> None:
    with pytest.raises(TemplateError, match="step 'send_welcome_email' has not completed"):
        render_value("{{ steps.send_welcome_email.output.message_id }}", SCOPE)
    with pytest.raises(TemplateError, match="step 'activate' has no result yet"):
        render_value("{{ steps.activate.output.x }}", SCOPE)
    with pytest.raises(TemplateError, match="step 'activate' has no result yet"):
        render_value("id: {{ steps.activate.output.x }}", SCOPE)


def test_syntax_errors() -> None:
    with pytest.raises(TemplateError, match="syntax error"):
        render_value("{{ input.username ", SCOPE, where="f")
    with pytest.raises(TemplateError, match="unknown filter 'nofilter'"):
        render_value("{{ input.username | nofilter }}", SCOPE)


def test_conditions() -> None:
    assert evaluate_condition("{{ steps.create_user_account.completed }}", SCOPE) is True
    assert evaluate_condition("steps.send_welcome_email.completed", SCOPE) is False
    assert evaluate_condition("input.n > 3 and response.ok", SCOPE) is True
    with pytest.raises(TemplateError, match="single expression"):
        evaluate_condition("{{ input.n }} > {{ input.n }}", SCOPE, where="c")
    with pytest.raises(TemplateError, match="no result yet") as info:
        evaluate_condition("steps.nope.completed", SCOPE, where="step 'x': condition")
    assert info.value.where == "step 'x': condition"


def test_referenced_paths_and_functions() -> None:
    value = {
        "a": "{{ input.username }}",
        "b": ["{{ steps.create_user_account.output.user_id }}", "{{ hash(input.password) }}"],
        "c": "{{ response.id }} {{ input.tags[input.i].x }} {{ steps['my-step'].status }} {{ input.name.upper() }}",
        "d": "{{ input.n | default(execution.id) }}",
    }
    assert referenced_paths(value) == {
        ("input", "username"),
        ("steps", "create_user_account", "output", "user_id"),
        ("input", "password"),
        ("response", "id"),
        ("input", "tags"),
        ("input", "i"),
        ("steps", "my-step", "status"),
        ("input", "name"),
        ("input", "n"),
        ("execution", "id"),
    }
    assert function_names(value) == {"hash"}
    assert is_single_expression(" {{ a }} ") and not is_single_expression("{{ a }}{{ b }}")


ESCAPES = [
    "{{ ''.__class__ }}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ().__class__.__bases__[0].__subclasses__() }}",
    "{{ x.__globals__ }}",
    "{{ input.__class__ }}",
    "{{ input['__class__'] }}",
    "{{ cycler.__init__.__globals__ }}",
    "{{ joiner }}",
    "{{ namespace() }}",
    "{{ lipsum() }}",
    "{{ lipsum }}",
    "{{ self }}",
    "{{ self.__init__.__globals__ }}",
    "{{ config }}",
    "{{ request }}",
    "{% import 'os' as os %}",
    "{% include 'x' %}",
    "{% extends 'x' %}",
    "{% for i in range(3) %}{{ i }}{% endfor %}",
    "{% set x = 1 %}",
    "{% macro m() %}{% endmacro %}",
    "{{ range(10**9) }}",
    "{{ range(10**9) | list }}",
    "{{ 'a' * 10**9 }}",
    "{{ [1] * 10**9 }}",
    "{{ 10**100000 }}",
    "{{ (10**1000)**1000 }}",
    "{{ 'x'.ljust(10**9) }}",
    "{{ '{:999999999}'.format(1) }}",
    "{{ '{:{w}}'.format(1, w=10**9) }}",
    "{{ '%999999999d' % 1 }}",
    "{{ '%*d' % (10**9, 1) }}",
    "{{ '%999999999d' | format(1) }}",
    "{{ [1] | batch(10**9, 0) | list }}",
    "{{ input.items.append(3) }}",
    "{{ input.username | random }}",
    "{{ input.profile_data.items() }}",
]


@pytest.mark.parametrize("template", ESCAPES)
def test_sandbox_escapes_and_bombs_raise(template: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateError):
        render_value(template, SCOPE)
    assert time.perf_counter() - started < 1.0


def test_size_limits() -> None:
    with pytest.raises(TemplateError, match="characters long"):
        render_value("{{ input.n }}" + " " * 10_000, SCOPE)
    big = {"input": {"s": "a" * 600_000}}
    with pytest.raises(TemplateError, match="longer than"):
        render_value("{{ input.s }}{{ input.s }}", big)
    with pytest.raises(TemplateError, match="would produce"):
        render_value("{{ input.s | replace('a', 'aa') }}", big)
    with pytest.raises(TemplateError, match="too much work"):
        render_value("{{ " + " + ".join(["range(100000) | sum"] * 30) + " }}", SCOPE)
