"""Recorded histories keep replaying to the same decisions.

Each file under `histories/` (written once by make_histories.py, never
rewritten) holds a definition, the inputs of one execution and the events the
core decided for each. Today's codec must still read the stored bytes, and
today's core, fed the same inputs at the same `now`, must decide exactly the
same events; folding them must give the state the live run ends with.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.codec import Codec
from orchestrator.codec.mapping import RECORD_TYPES
from orchestrator.core.decide import handle
from orchestrator.core.definition import WorkflowDefinition
from orchestrator.core.evolve import evolve, initial_state
from orchestrator.core.loading import load_definition_source
from orchestrator.core.messages import FireTimer
from tests.golden import make_histories
from tests.golden.make_corpus import to_jsonable
from tests.golden.test_golden import _assert_matches

FILES = sorted(make_histories.HISTORIES_DIR.glob("*.json"))


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text("utf-8"))


def _definition(doc: dict[str, Any]) -> WorkflowDefinition:
    source = "\n".join(doc["definition"]["source_lines"]) + "\n"
    return load_definition_source(source, file=f"{doc['scenario']}: {doc['definition']['file']}")


def _input(codec: Codec, entry: dict[str, Any], where: str) -> Any:
    """The stored input, decoded from its bytes (FireTimer, internal, from its JSON)."""
    stored = entry["input"]
    if "avro" not in entry:
        assert stored["$type"] == FireTimer.__name__, f"{where}: only FireTimer is stored without bytes"
        return RECORD_TYPES[stored["$type"]](**{k: v for k, v in stored.items() if k != "$type"})
    decoded = codec.decode(base64.b64decode(entry["avro"]))
    _assert_matches(stored, to_jsonable(decoded), f"{where}: input decodes to another value")
    return decoded


def _differs(expected: Any, actual: Any) -> bool:
    try:
        _assert_matches(expected, actual, "")
    except AssertionError:
        return True
    return False


def test_there_are_recorded_histories():
    assert FILES, f"no histories under {make_histories.HISTORIES_DIR}; run tests/golden/make_histories.py"


def test_the_files_match_the_scenarios(capsys):
    """make_histories --check: one file per scenario, none without one, none changed."""
    assert {p.stem for p in FILES} == set(make_histories.SCENARIOS)
    assert make_histories.main(["--check"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_stored_bytes_still_decode(path: Path):
    codec = Codec.default()
    doc = _load(path)
    for i, entry in enumerate(doc["inputs"]):
        where = f"{doc['scenario']}: input #{i} ({entry['input']['$type']})"
        _input(codec, entry, where)
        for j, stored in enumerate(entry["events"]):
            decoded = codec.decode(base64.b64decode(stored["avro"]), expect="events")
            _assert_matches(stored["event"], to_jsonable(decoded), f"{where}, event #{j}: bytes decode differently")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_the_current_core_makes_the_recorded_decisions(path: Path):
    """Same inputs, same `now` and cause: exactly the recorded events; and
    folding the recorded events gives the state the live run has after each input."""
    codec = Codec.default()
    doc = _load(path)
    definition = _definition(doc)
    live = initial_state(doc["execution_id"])
    folded = initial_state(doc["execution_id"])
    for i, entry in enumerate(doc["inputs"]):
        where = f"{doc['scenario']}: input #{i} ({entry['input']['$type']}, cause {entry['cause']!r})"
        command = _input(codec, entry, where)
        live, produced = handle(live, command, definition, entry["now"], cause=entry["cause"])
        expected = [e["event"] for e in entry["events"]]
        got = [to_jsonable(r) for r in produced]
        for j in range(max(len(expected), len(got))):
            want = expected[j] if j < len(expected) else None
            have = got[j] if j < len(got) else None
            if want is None or have is None or _differs(want, have):
                pytest.fail(f"{where} decides differently at event #{j}:\n"
                            f"  recorded: {json.dumps(want, ensure_ascii=False)}\n"
                            f"  now:      {json.dumps(have, ensure_ascii=False)}\n"
                            f"  (recorded {len(expected)} event(s), now {len(got)})", pytrace=False)
        for stored in entry["events"]:
            folded = evolve(folded, codec.decode(base64.b64decode(stored["avro"]), expect="events"))
        assert folded == live, f"{where}: folding the recorded events differs from the live state"
    final = {"status": live.status, "steps": {n: s.status for n, s in live.steps.items()}}
    assert final == doc["final"], f"{doc['scenario']}: ends {final}, recorded {doc['final']}"
