"""The Avro codec: round trips, framing, schema conventions, evolution, errors."""

from __future__ import annotations

import dataclasses
import io
import json
import math
import shutil
import struct
from pathlib import Path

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.codec import KINDS, Codec, DecodeError, EncodeError, fingerprint, known_fingerprints, schema_dir
from orchestrator.codec.mapping import RECORD_TYPES, iter_records
from orchestrator.core import events as ev
from orchestrator.core import messages as msg

SCHEMAS = Path(str(schema_dir()))
codec = Codec.default()

# -- strategies ------------------------------------------------------------------

text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)  # Avro strings are UTF-8
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4),
    max_leaves=20,
)
ints = st.integers(min_value=0, max_value=2**31 - 1)
millis = st.integers(min_value=0, max_value=2**62)
opt_text = st.none() | text
opt_status = st.none() | st.integers(min_value=100, max_value=599)

event_values = st.one_of(
    st.builds(ev.WorkflowStarted, text, text, json_values, opt_text, opt_text, opt_text),
    st.builds(ev.WorkflowStartRejected, text, opt_text, json_values, st.lists(text, max_size=3).map(tuple), opt_text,
              opt_text, opt_text),
    st.builds(ev.StepScheduled, text, ints, millis),
    st.builds(ev.StepCompleted, text, ints, json_values),
    st.builds(ev.StepAttemptFailed, text, ints, text, st.booleans(), st.booleans(), opt_status, opt_text),
    st.builds(ev.StepFailed, text, ints, text, st.sampled_from(["terminate", "continue", "compensate"])),
    st.builds(ev.StepSkipped, text, text),
    st.builds(ev.StepSkipped, text, text, json_values, opt_text),
    st.builds(ev.ExecutionPaused, text, opt_text),
    st.builds(ev.ExecutionResumed, text, opt_text),
    st.builds(ev.ExecutionRetried, st.lists(text, max_size=3).map(tuple), json_values, text, opt_text),
    st.builds(ev.TimerScheduled, text, millis),
    st.builds(ev.TimerFired, text),
    st.builds(ev.WorkflowCompleted, json_values),
    st.builds(ev.WorkflowFailed, text, opt_text),
    st.builds(ev.WorkflowCancelled, text, opt_text),
    st.builds(ev.CommandRejected, text, text, opt_text),
    st.builds(ev.StepWaiting, text, opt_text, opt_text, json_values, st.none() | millis),
    st.builds(ev.SignalReceived, text, json_values, opt_text),
    st.builds(ev.WaitSatisfied, text, text, text, opt_text, json_values, st.none() | millis, opt_text),
    st.builds(ev.CompensationStarted, text, text, opt_text, opt_text, opt_text),
    st.builds(ev.CompensationFinished, text, opt_text),
    st.builds(ev.ChildExecutionRequested, text, text, opt_text, json_values, text),
)
messages = st.one_of(
    st.builds(ev.RecordedEvent, text, st.integers(min_value=1, max_value=2**62), millis, text, event_values),
    st.builds(msg.StartWorkflow, text, text, opt_text, json_values, opt_text, opt_text, opt_text),
    st.builds(msg.DeliverEvent, text, text, text, text, json_values, millis, opt_text),
    st.builds(msg.ChildExecutionEnded, text, text, text, text, json_values, opt_text),
    st.builds(msg.WaitOpened, text, text, text, json_values, millis, st.none() | millis),
    st.builds(msg.CancelWorkflow, text, text, opt_text),
    st.builds(msg.SignalWorkflow, text, text, json_values, opt_text),
    st.builds(msg.RetryExecution, text, json_values, text, opt_text),
    st.builds(msg.PauseExecution, text, text, opt_text),
    st.builds(msg.ResumeExecution, text, text, opt_text),
    st.builds(msg.SkipStep, text, text, json_values, text, opt_text),
    st.builds(msg.TaskSucceeded, text, text, ints, json_values, millis, millis),
    st.builds(msg.TaskFailed, text, text, ints, text, st.booleans(), opt_status, millis, millis, opt_text),
    st.builds(msg.ExecuteStep, text, text, text, text, text, ints, text, json_values, json_values, millis, millis),
    st.builds(msg.DefinitionRegistered, text, text, text, st.sampled_from(["yaml", "json"]), text, millis, opt_text),
    st.builds(msg.ExternalEvent, text, text, json_values, millis, opt_text),
)

EXPECTED_KIND = {
    ev.RecordedEvent: "events", msg.StartWorkflow: "commands", msg.CancelWorkflow: "commands",
    msg.SignalWorkflow: "commands", msg.TaskSucceeded: "results", msg.TaskFailed: "results",
    msg.ExecuteStep: "tasks", msg.DefinitionRegistered: "definitions", msg.ExternalEvent: "external-events",
    msg.DeliverEvent: "commands", msg.ChildExecutionEnded: "results", msg.WaitOpened: "waits",
    msg.CancelStep: "commands", msg.ScheduleFired: "schedules", msg.RetryExecution: "commands",
    msg.PauseExecution: "commands", msg.ResumeExecution: "commands", msg.SkipStep: "commands",
}


def sample_event() -> ev.RecordedEvent:
    return ev.RecordedEvent("ex-1", 3, 1_700_000_000_000, "result:s#1", ev.StepCompleted("s", 1, {"b": 1, "a": "é"}))


# -- round trips -----------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(messages)
def test_round_trip_every_message_type(message):
    data = codec.encode(message)
    kind = EXPECTED_KIND[type(message)]
    assert codec.kind_of(message) == kind
    assert data[:2] == b"\xc3\x01" and data[2:10] == codec.current_fingerprint(kind)
    assert codec.decode(data) == message
    assert codec.decode(data, expect=kind) == message


def test_every_dataclass_with_a_schema_is_covered():
    names = {name for _, s in _current_schemas() for name, _ in iter_records(s)}
    short = {n.rpartition(".")[2] for n in names}
    # every event and every Kafka message has a record; FireTimer never travels
    assert set(ev.__all__) - {"Event"} <= short
    assert {"StartWorkflow", "CancelWorkflow", "SignalWorkflow", "TaskSucceeded", "TaskFailed", "ExecuteStep",
            "DefinitionRegistered", "ExternalEvent"} <= short
    assert "FireTimer" not in short
    assert set(EXPECTED_KIND) == {cls for cls in RECORD_TYPES.values() if _is_top_level(cls)}


def _is_top_level(cls) -> bool:
    try:
        codec.kind_of(cls)
        return True
    except TypeError:
        return False


def test_timestamps_stay_ints():
    decoded = codec.decode(codec.encode(sample_event()))
    assert type(decoded.recorded_at) is int and decoded.recorded_at == 1_700_000_000_000
    task = msg.TaskSucceeded("x", "s", 1, None, 5, 6)
    assert type(codec.decode(codec.encode(task)).started_at) is int


def test_json_fields_are_canonical_text():
    data = codec.encode(msg.StartWorkflow("x", "w", None, {"b": [1, 2.5, None], "a": "zoë"}))
    assert '{"a":"zoë","b":[1,2.5,null]}'.encode() in data
    # tuples in JSON payloads come back as lists (JSON has only arrays)
    assert codec.decode(codec.encode(msg.SignalWorkflow("x", "s", {"t": (1, 2)}))).data == {"t": [1, 2]}


def test_default_codec_is_shared_and_knows_all_kinds():
    assert Codec.default() is Codec.default()
    assert {v.kind for v in codec.versions} == set(KINDS)
    assert set(known_fingerprints()) == {v.fingerprint for v in codec.versions}
    for kind in KINDS:
        assert codec.current_fingerprint(kind) == fingerprint((SCHEMAS / f"{kind}.avsc").read_text())


# -- framing: any Avro library can read our bytes with the .avsc alone -------------


@pytest.mark.parametrize("kind", KINDS)
def test_frame_is_avro_single_object_encoding(kind):
    message = {
        "events": sample_event(),
        "commands": msg.CancelWorkflow("x"),
        "results": msg.TaskSucceeded("x", "s", 1, 1, 2, 3),
        "tasks": msg.ExecuteStep("x", "w", "1", "s", "t", 1, "x/s", {}, {}, 1, 2),
        "definitions": msg.DefinitionRegistered("n", "1", "src", "yaml", "d", 9),
        "external-events": msg.ExternalEvent("e", "t", [], 9),
        "waits": msg.WaitOpened("x", "s", "t", {}, 9),
        "schedules": msg.ScheduleFired("w", "t", 9, "w-t-9", 10),
    }[kind]
    schema = json.loads((SCHEMAS / f"{kind}.avsc").read_text())
    data = codec.encode(message)
    assert data[:2] == bytes([0xC3, 0x01])
    assert data[2:10] == fingerprint(schema)
    plain = fastavro.schemaless_reader(io.BytesIO(data[10:]), fastavro.parse_schema(schema))
    assert isinstance(plain, dict)  # decodes with nothing but the schema file


def test_fingerprint_matches_avro_spec_vectors():
    # from Apache Avro's share/test/data/schema-tests.txt (signed 64-bit values)
    vectors = {
        '"null"': 7195948357588979594,
        '"int"': 8247732601305521295,
        '"string"': -8142146995180207161,
        '[ "int" , {"type":"boolean"} ]': 5392556393470105090,
        '{"fields":[], "type":"record", "name":"foo", "namespace":"x.y"}': 5916914534497305771,
        '{"fields":[], "type":"record", "name":"a.b.foo", "namespace":"x.y"}': -4616218487480524110,
        '{"fields":[], "type":"record", "name":"foo", "doc":"Useful info"}': -4824392279771201922,
        '{"namespace":"x.y.z", "type":"enum", "name":"foo", "doc":"foo bar", "symbols":["A1", "A2"]}':
            -4448647247586288245,
        '{ "items":{"type":"null"}, "type":"array"}': -589620603366471059,
        '{"name":"PigValue","type":"record","fields":[{"name":"value", "type":["null", "int", "long", "PigValue"]}]}':
            -1759257747318642341,
    }
    for schema, value in vectors.items():
        assert fingerprint(schema) == struct.pack("<q", value), schema


# -- schema files follow the conventions --------------------------------------------


def _current_schemas():
    return [(kind, json.loads((SCHEMAS / f"{kind}.avsc").read_text())) for kind in KINDS]


@pytest.mark.parametrize("kind", KINDS)
def test_schema_conventions(kind):
    schema = dict(_current_schemas())[kind]
    assert schema["namespace"] == "orchestrator.v1" and schema.get("doc")
    for name, record in iter_records(schema):
        assert name.startswith("orchestrator.v1."), name
        assert record.get("doc"), f"{name} has no doc"
        cls = RECORD_TYPES.get(name.rpartition(".")[2])
        hints = {f.name: f.type for f in dataclasses.fields(cls)} if cls else {}
        for field in record["fields"]:
            where = f"{name}.{field['name']}"
            assert field.get("doc"), f"{where} has no doc"
            ftype = field["type"]
            if field["name"].endswith("_json"):
                assert ftype == "string", where
            if field["name"].endswith("_at"):
                timestamp = {"type": "long", "logicalType": "timestamp-millis"}
                assert ftype in (timestamp, ["null", timestamp]), where
            if isinstance(ftype, list) and "null" in ftype:
                assert ftype[0] == "null" and "default" in field and field["default"] is None, where
            if field["name"] in hints:  # Optional in Python <=> ["null", T] in Avro
                optional = "None" in str(hints[field["name"]])
                assert optional == (isinstance(ftype, list) and "null" in ftype), where


@pytest.mark.parametrize("kind", KINDS)
def test_current_schema_is_released_in_history(kind):
    """`<kind>.avsc` must equal the highest history/<kind>/v<N>.avsc (see schemas/README.md)."""
    versions = sorted((SCHEMAS / "history" / kind).glob("v*.avsc"), key=lambda p: int(p.stem[1:]))
    assert versions, f"schemas/history/{kind}/ is empty"
    assert [int(p.stem[1:]) for p in versions] == list(range(1, len(versions) + 1))
    assert fingerprint(versions[-1].read_text()) == fingerprint((SCHEMAS / f"{kind}.avsc").read_text()), (
        f"schemas/{kind}.avsc changed: release it as schemas/history/{kind}/v{len(versions) + 1}.avsc")
    for older in versions:  # every released version is registered for decoding
        assert fingerprint(older.read_text()) in codec.known_fingerprints


# -- evolution: old writers resolve to the current reader ----------------------------


def _evolved_schema_dir(tmp_path: Path) -> Path:
    """A copy of the schemas where the current commands/events are v2 and a v1
    lacked `requested_by` on StartWorkflow and the last two event types."""
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    root = tmp_path / "schemas"
    for later in [*root.glob("history/commands/v*.avsc"), *root.glob("history/events/v*.avsc")]:
        if later.stem not in ("v1", "v2"):
            later.unlink()  # the copy's current schema becomes v2
    commands = json.loads((root / "commands.avsc").read_text())
    old = json.loads(json.dumps(commands))
    start = old["fields"][0]["type"][0]
    start["fields"] = [f for f in start["fields"] if f["name"] != "requested_by"]
    (root / "history/commands/v1.avsc").write_text(json.dumps(old))
    (root / "history/commands/v2.avsc").write_text(json.dumps(commands))
    events = json.loads((root / "events.avsc").read_text())
    old_events = json.loads(json.dumps(events))
    old_events["fields"][-1]["type"] = old_events["fields"][-1]["type"][:-2]
    (root / "history/events/v1.avsc").write_text(json.dumps(old_events))
    (root / "history/events/v2.avsc").write_text(json.dumps(events))
    return root


def _write_old(schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    out.write(b"\xc3\x01" + fingerprint(schema))
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


def test_old_writer_schema_resolves_to_current_reader(tmp_path):
    root = _evolved_schema_dir(tmp_path)
    evolved = Codec(root)
    assert {(v.kind, v.version) for v in evolved.versions if v.kind == "commands"} == {("commands", 1), ("commands", 2)}
    old_commands = json.loads((root / "history/commands/v1.avsc").read_text())
    data = _write_old(old_commands, {"command": ("orchestrator.v1.StartWorkflow", {
        "execution_id": "x", "workflow_name": "w", "workflow_version": None, "input_json": '{"a":1}'})})
    assert evolved.decode(data, expect="commands") == msg.StartWorkflow("x", "w", None, {"a": 1}, None)
    old_events = json.loads((root / "history/events/v1.avsc").read_text())
    data = _write_old(old_events, {"execution_id": "x", "sequence": 1, "recorded_at": 5, "cause": "c",
                                   "event": ("orchestrator.v1.TimerFired", {"timer_id": "t"})})
    assert evolved.decode(data) == ev.RecordedEvent("x", 1, 5, "c", ev.TimerFired("t"))
    # today's bytes are the current version's and still round-trip
    assert evolved.decode(evolved.encode(sample_event())) == sample_event()


def test_unreleased_current_schema_still_works(tmp_path):
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    shutil.rmtree(tmp_path / "schemas" / "history" / "tasks")
    local = Codec(tmp_path / "schemas")
    [tasks] = [v for v in local.versions if v.kind == "tasks"]
    assert tasks.version is None and tasks.current and tasks.label == "tasks (unreleased)"
    task = msg.ExecuteStep("x", "w", "1", "s", "t", 1, "x/s", {}, {}, 1, 2)
    assert local.decode(local.encode(task)) == task


def test_schema_and_dataclass_must_agree(tmp_path):
    shutil.copytree(SCHEMAS, tmp_path / "schemas")
    path = tmp_path / "schemas" / "tasks.avsc"
    schema = json.loads(path.read_text())
    schema["fields"][0]["type"][0]["fields"].append({"name": "surprise", "type": "string", "doc": "x"})
    path.write_text(json.dumps(schema))
    with pytest.raises(TypeError, match="surprise"):
        Codec(tmp_path / "schemas")


# -- errors ----------------------------------------------------------------------


def test_garbage_is_rejected_clearly():
    for garbage in (b"", b"{}", b'{"execution_id": "x"}', b"\x00\x01\x02", b"\xc3"):
        with pytest.raises(DecodeError, match="missing C3 01 marker"):
            codec.decode(garbage)
    with pytest.raises(DecodeError, match="tombstone"):
        codec.decode(None)


def test_unknown_fingerprint():
    data = codec.encode(sample_event())
    forged = data[:2] + bytes.fromhex("0102030405060708") + data[10:]
    with pytest.raises(DecodeError, match=r"unknown schema fingerprint 0x0807060504030201"):
        codec.decode(forged)
    with pytest.raises(DecodeError, match="truncated frame"):
        codec.decode(data[:6])


def test_truncated_or_overlong_body():
    data = codec.encode(sample_event())
    with pytest.raises(DecodeError, match=r"truncated/invalid body for schema events v\d"):
        codec.decode(data[:-4])
    with pytest.raises(DecodeError, match=r"truncated/invalid body for schema events v\d: 3 trailing bytes"):
        codec.decode(data + b"abc")
    with pytest.raises(DecodeError, match="truncated/invalid body"):  # an absurd string length
        codec.decode(data[:10] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01")


def test_wrong_envelope():
    data = codec.encode(msg.TaskSucceeded("x", "s", 1, {}, 1, 2))
    with pytest.raises(DecodeError, match="wrong envelope: expected a 'commands' message, got one of kind 'results'"):
        codec.decode(data, expect="commands")
    with pytest.raises(ValueError, match="unknown topic kind"):
        codec.decode(data, expect="wf.results")


def test_invalid_json_field():
    schema = json.loads((SCHEMAS / "commands.avsc").read_text())
    data = _write_old(schema, {"command": ("orchestrator.v1.StartWorkflow", {
        "execution_id": "x", "workflow_name": "w", "workflow_version": None, "input_json": "{not json",
        "requested_by": None})})
    with pytest.raises(DecodeError, match="JSON field input_json is not valid JSON"):
        codec.decode(data)


def test_encode_errors():
    with pytest.raises(TypeError, match="not a message type"):
        codec.encode({"execution_id": "x"})
    with pytest.raises(TypeError, match="not a message type"):
        codec.encode(msg.FireTimer("x", "t"))  # internal, never on Kafka
    with pytest.raises(EncodeError, match="JSON field input_json"):
        codec.encode(msg.StartWorkflow("x", "w", None, {"n": math.nan}))
    with pytest.raises(EncodeError, match="JSON field output_json"):
        codec.encode(msg.TaskSucceeded("x", "s", 1, {"when": object()}, 1, 2))
    with pytest.raises(EncodeError, match="StartWorkflow"):
        codec.encode(msg.StartWorkflow(None, "w", None, {}))  # type: ignore[arg-type]
    with pytest.raises(EncodeError):
        codec.encode(ev.RecordedEvent("x", 1, 1, "c", msg.CancelWorkflow("x")))  # not an event


def test_decode_accepts_bytes_like():
    data = codec.encode(sample_event())
    assert codec.decode(bytearray(data)) == codec.decode(memoryview(data)) == sample_event()


def test_a_lone_surrogate_in_json_travels_escaped_and_reads_back_the_same():
    # json.loads("\"\\ud800\"") gives a str with no UTF-8 form; a client can send that.
    message = msg.StartWorkflow("e", "w", None, {"note": "a\ud800b", "nul": "x\x00y"})
    assert codec.decode(codec.encode(message)) == message
