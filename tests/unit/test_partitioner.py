"""murmur2 / partition_for must match Java's default partitioner bit for bit."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestrator.runtime.partitioner import murmur2, partition_for

# org.apache.kafka.common.utils.UtilsTest#testMurmur2 (signed Java ints)
KAFKA_UTILS_TEST = {
    "21": -973932308,
    "foobar": -790332482,
    "a-little-bit-long-string": -985981536,
    "a-little-bit-longer-string": -1486304829,
    "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    "abc": 479470107,
}
# values other Kafka clients check against Utils.murmur2 (lengths 1..5: every tail case)
SHORT_KEYS = {"1": -1993445489, "12": 126087238, "123": -267702483, "1234": -1614185708, "12345": -1188365604}
# librdkafka rdmurmur2.c unit test: toPositive(murmur2(key))
LIBRDKAFKA_POSITIVE = {"kafka": 1348980580, "amqp": 767747138, "giberish123456789": 257239820}


@pytest.mark.parametrize("key,expected", sorted({**KAFKA_UTILS_TEST, **SHORT_KEYS}.items()))
def test_murmur2_matches_java(key, expected):
    assert murmur2(key.encode()) == expected


@pytest.mark.parametrize("key,expected", sorted(LIBRDKAFKA_POSITIVE.items()))
def test_murmur2_matches_librdkafka(key, expected):
    assert murmur2(key.encode()) & 0x7FFFFFFF == expected


def test_partition_for_is_positive_murmur2_modulo():
    # toPositive(-973932308) = 1173551340; % 4 = 0, % 7 = 1173551340 % 7
    assert partition_for("21", 4) == (1173551340 % 4)
    assert partition_for("21", 7) == 1173551340 % 7
    assert partition_for("abc", 1) == 0
    assert partition_for("kafka", 1000) == 1348980580 % 1000


def test_utf8_keys_and_bytes_agree():
    key = "exécution-🎉"
    assert partition_for(key, 12) == partition_for(key.encode("utf-8"), 12)


def test_partition_count_must_be_positive():
    with pytest.raises(ValueError):
        partition_for("x", 0)


@given(st.text(), st.integers(min_value=1, max_value=10_000))
def test_partition_in_range(key, partitions):
    p = partition_for(key.encode("utf-8", "surrogatepass"), partitions)
    assert 0 <= p < partitions
    assert -(2**31) <= murmur2(key.encode("utf-8", "surrogatepass")) < 2**31
