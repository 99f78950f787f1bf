"""The correlator's pure core: which open waits an external event completes, and when."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.core.correlation import Correlation, wait_key
from orchestrator.core.messages import DeliverEvent, ExternalEvent, WaitOpened

BUFFER = 60_000  # ms


def wait(eid: str = "e-1", step: str = "await_verification", event_type: str = "user.verified",
         filter: dict | None = None, opened_at: int = 1_000) -> WaitOpened:
    return WaitOpened(eid, step, event_type, {"user_id": "u-1"} if filter is None else filter, opened_at, None)


def event(event_id: str = "ev-1", event_type: str = "user.verified", data: dict | None = None) -> ExternalEvent:
    return ExternalEvent(event_id, event_type, {"user_id": "u-1"} if data is None else data, 500, "test")


def delivered(deliveries: list[DeliverEvent]) -> list[tuple[str, str, str]]:
    return [(d.execution_id, d.step, d.event_id) for d in deliveries]


def test_an_arriving_event_goes_to_the_open_wait_it_matches_with_its_data():
    c = Correlation(BUFFER)
    assert c.open_wait(wait()) == []
    [d] = c.event_arrived(event(data={"user_id": "u-1", "at": "now"}), 0, 2_000)
    assert d == DeliverEvent("e-1", "await_verification", "ev-1", "user.verified",
                             {"user_id": "u-1", "at": "now"}, 500, "test")


def test_an_event_whose_data_does_not_match_the_filter_or_of_another_type_goes_nowhere():
    c = Correlation(BUFFER)
    c.open_wait(wait())
    assert c.event_arrived(event("ev-1", data={"user_id": "u-2"}), 0, 2_000) == []
    assert c.event_arrived(event("ev-2", data={}), 0, 2_000) == []
    assert c.event_arrived(event("ev-3", event_type="user.deleted"), 0, 2_000) == []


def test_an_event_that_arrived_before_the_wait_opened_is_delivered_when_it_opens():
    c = Correlation(BUFFER)
    assert c.event_arrived(event(), 1, 900) == []
    assert delivered(c.open_wait(wait(opened_at=1_000))) == [("e-1", "await_verification", "ev-1")]


def test_an_expired_event_is_not_delivered_to_a_wait_that_opens_later():
    c = Correlation(BUFFER)
    c.event_arrived(event(), 0, 1_000)
    assert c.expire(1_000 + BUFFER) == 1
    assert c.buffered == 0
    assert c.open_wait(wait(opened_at=1_000 + BUFFER)) == []


def test_an_event_older_than_the_buffer_when_the_wait_opened_is_not_delivered_even_if_still_held():
    c = Correlation(BUFFER)
    c.event_arrived(event(), 0, 1_000)  # not expired yet: expire() was not called
    assert c.open_wait(wait(opened_at=1_000 + BUFFER)) == []
    assert c.open_wait(wait(step="other", opened_at=BUFFER)) != []


def test_two_waits_of_different_executions_both_get_the_event():
    c = Correlation(BUFFER)
    c.open_wait(wait("e-1"))
    c.open_wait(wait("e-2"))
    assert sorted(delivered(c.event_arrived(event(), 0, 2_000))) == [
        ("e-1", "await_verification", "ev-1"), ("e-2", "await_verification", "ev-1")]
    # ...and a third, opening later, gets it from the buffer.
    assert delivered(c.open_wait(wait("e-3", opened_at=3_000))) == [("e-3", "await_verification", "ev-1")]


def test_an_event_goes_to_an_execution_at_most_once():
    c = Correlation(BUFFER)
    c.open_wait(wait("e-1", "first"))
    c.open_wait(wait("e-1", "second", opened_at=1_001))
    # Two waits of one execution: the event goes to the one that opened first only.
    assert delivered(c.event_arrived(event(), 0, 2_000)) == [("e-1", "first", "ev-1")]
    # The same event again (re-published) goes nowhere; a wait opening later skips it.
    assert c.event_arrived(event(), 0, 2_500) == []
    c.close_wait("e-1/first")
    c.close_wait("e-1/second")
    assert c.open_wait(wait("e-1", "third", opened_at=3_000)) == []
    # ...but the next event goes to the open wait.
    assert delivered(c.event_arrived(event("ev-2"), 0, 4_000)) == [("e-1", "third", "ev-2")]


def test_a_wait_takes_one_event_until_it_is_closed_or_opened_anew():
    c = Correlation(BUFFER)
    c.open_wait(wait())
    assert len(c.event_arrived(event("ev-1"), 0, 2_000)) == 1
    assert c.event_arrived(event("ev-2"), 0, 2_001) == []  # waiting for its tombstone
    assert c.open_wait(wait()) == []  # the same WaitOpened read again changes nothing
    reopened = wait(opened_at=5_000)  # a new wait at the same key
    assert delivered(c.open_wait(reopened)) == [("e-1", "await_verification", "ev-2")]


def test_a_closed_wait_gets_nothing():
    c = Correlation(BUFFER)
    w = wait()
    c.open_wait(w)
    c.close_wait(wait_key(w))
    assert c.open_waits == 0
    assert c.event_arrived(event(), 0, 2_000) == []
    c.close_wait("never/opened")  # a tombstone of an unknown wait is harmless


def test_an_opening_wait_gets_the_earliest_matching_buffered_event():
    c = Correlation(BUFFER)
    c.event_arrived(event("late"), 0, 900)
    c.event_arrived(event("other-user", data={"user_id": "u-9"}), 1, 100)
    c.event_arrived(event("early"), 1, 300)
    c.event_arrived(event("tie-later-seq"), 0, 300)
    assert delivered(c.open_wait(wait())) == [("e-1", "await_verification", "early")]


def test_an_empty_filter_matches_any_event_of_the_type():
    c = Correlation(BUFFER)
    c.open_wait(wait(filter={}))
    assert len(c.event_arrived(event(data={"anything": 1}), 0, 2_000)) == 1


def test_dropped_partitions_take_their_buffered_events_along():
    c = Correlation(BUFFER)
    c.event_arrived(event("p0"), 0, 900)
    c.event_arrived(event("p1"), 1, 800)
    assert c.drop_partitions({1}) == 1
    assert (c.buffered_in(0), c.buffered_in(1)) == (1, 0)
    assert delivered(c.open_wait(wait())) == [("e-1", "await_verification", "p0")]
    assert c.expire(10 * BUFFER) == 1  # the dropped event is not counted twice


def test_restored_events_are_buffered_silently_then_offered_to_waits_without_an_event():
    c = Correlation(BUFFER)
    c.open_wait(wait("e-1"))
    c.open_wait(wait("e-2", filter={"user_id": "u-2"}))
    assert c.event_arrived(event("old"), 1, 1_500, deliver=False) == []
    assert c.event_arrived(event("older"), 1, 1_200, deliver=False) == []
    assert delivered(c.restored([1])) == [("e-1", "await_verification", "older")]
    assert c.restored([0]) == []  # nothing buffered there
    # A restore delivery may repeat one from before a restart: the wait stays ready.
    assert delivered(c.event_arrived(event("live"), 0, 2_000)) == [("e-1", "await_verification", "live")]


def test_expiry_forgets_where_an_event_went_once_no_copy_is_left():
    c = Correlation(BUFFER)
    c.open_wait(wait())
    c.event_arrived(event(), 0, 2_000)
    c.close_wait("e-1/await_verification")
    c.expire(2_000 + BUFFER)
    c.open_wait(wait(opened_at=2_000 + BUFFER))
    # Re-published after it expired: it arrives as a new event (the decider dedups by id).
    assert len(c.event_arrived(event(), 0, 3_000 + BUFFER)) == 1


# -- the indexes change nothing: the same deliveries as trying every candidate ----------



class _BruteForce(Correlation):
    """Every wait of the type, every buffered event of the type: the reference."""

    def _candidate_waits(self, event):
        return {k: w for k, w in self._waits.items() if w.event_type == event.event_type}

    def _candidate_events(self, partition, wait):
        return self._buffer.get(partition, {}).get(wait.event_type, {}).values()


_values = st.sampled_from([1, 1.0, 2, True, False, "1", "a", None, [1], {"x": 1}])
_filters = st.dictionaries(st.sampled_from(["a", "b", "n.x"]), _values, max_size=2)
_data = st.dictionaries(st.sampled_from(["a", "b", "n"]), _values | st.just({"x": 1}), max_size=3)
_ops = st.lists(st.one_of(
    st.tuples(st.just("open"), st.integers(0, 5), st.sampled_from(["t", "u"]), _filters, st.integers(0, 50)),
    st.tuples(st.just("close"), st.integers(0, 5)),
    st.tuples(st.just("event"), st.integers(0, 9), st.sampled_from(["t", "u"]), _data, st.integers(0, 1),
              st.integers(0, 50)),
    st.tuples(st.just("expire"), st.integers(0, 80)),
    st.tuples(st.just("drop"), st.integers(0, 1)),
), max_size=40)


@settings(max_examples=300, deadline=None)
@given(_ops)
def test_indexed_matching_delivers_what_trying_every_candidate_delivers(ops):
    fast, slow = Correlation(30), _BruteForce(30)
    for op in ops:
        results = []
        for c in (fast, slow):
            if op[0] == "open":
                _, n, etype, filt, at = op
                results.append(c.open_wait(WaitOpened(f"e{n}", "s", etype, filt, at)))
            elif op[0] == "close":
                c.close_wait(f"e{op[1]}/s")
                results.append(None)
            elif op[0] == "event":
                _, n, etype, data, partition, at = op
                results.append(c.event_arrived(ExternalEvent(f"ev{n}", etype, data, at), partition, at))
            elif op[0] == "expire":
                results.append(c.expire(op[1]))
            else:
                results.append(c.drop_partitions([op[1]]))
        assert results[0] == results[1], op
