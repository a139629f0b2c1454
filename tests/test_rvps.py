"""trustpod.rvps: sample register messages, query, expiry (fail closed) with a fixed clock."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustpod._internal.clock import FixedClock
from trustpod.errors import EvidenceError
from trustpod.rvps import NAMESPACE, ReferenceValueStore, parse_message
from trustpod.rvps.message import add_months
from trustpod.storage.memory import MemoryStore

T0 = dt.datetime(2026, 1, 31, 12, 0, 0, 500, tzinfo=dt.UTC)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def message(values: dict[str, Any], **over: Any) -> dict[str, Any]:
    payload = base64.b64encode(json.dumps(values).encode()).decode()
    return {"version": "0.1.0", "type": "sample", "payload": payload, **over}


def test_register_and_query_layout() -> None:
    store, clock = MemoryStore(), FixedClock(T0)
    rvps = ReferenceValueStore(store, clock)
    names = rvps.register(message({"svn": ["1"], "launch_digest": ["abcde"], "n": 3}))
    assert names == ["svn", "launch_digest", "n"]
    assert rvps.query("svn") == ["1"]
    assert rvps.query("n") == 3
    assert rvps.query("absent") is None
    # stored as upstream's ReferenceValue JSON, expiration now + 12 months
    record = json.loads(store.get(NAMESPACE, "svn") or b"")
    assert record == {
        "version": "0.1.0",
        "name": "svn",
        "expiration": "2027-01-31T12:00:00Z",
        "value": ["1"],
    }
    assert rvps.all_values() == {"launch_digest": ["abcde"], "n": 3, "svn": ["1"]}


def test_version_defaults_to_0_1_0() -> None:
    msg = message({"svn": ["1"]})
    del msg["version"]
    rvps = ReferenceValueStore(MemoryStore(), FixedClock(T0))
    assert rvps.register(msg) == ["svn"]


def test_reregister_overwrites() -> None:
    rvps = ReferenceValueStore(MemoryStore(), FixedClock(T0))
    rvps.register(message({"svn": ["1"]}))
    rvps.register(message({"svn": ["2"]}))
    assert rvps.query("svn") == ["2"]


def test_expired_values_are_not_served() -> None:
    clock = FixedClock(T0)
    rvps = ReferenceValueStore(MemoryStore(), clock)
    rvps.register(message({"svn": ["1"]}))
    clock.set(dt.datetime(2027, 1, 31, 11, 59, 59, tzinfo=dt.UTC))
    assert rvps.query("svn") == ["1"]
    clock.set(dt.datetime(2027, 1, 31, 12, 0, 0, tzinfo=dt.UTC))
    assert rvps.query("svn") == ["1"]  # upstream: expired only when now > expiration
    clock.advance(1)
    assert rvps.query("svn") is None
    assert rvps.all_values() == {}
    record = rvps.record("svn")
    assert record is not None and record.value == ["1"]


def test_serve_expired_restores_upstream() -> None:
    clock, store = FixedClock(T0), MemoryStore()
    ReferenceValueStore(store, clock).register(message({"svn": ["1"]}))
    clock.advance(400 * 86400)
    assert ReferenceValueStore(store, clock, serve_expired=True).query("svn") == ["1"]


def test_corrupt_record_not_served() -> None:
    store = MemoryStore()
    store.put(NAMESPACE, "bad", b"{not json")
    rvps = ReferenceValueStore(store, FixedClock(T0))
    assert rvps.query("bad") is None
    assert rvps.all_values() == {}


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (message({"a": 1}, version="0.2.0"), "rvps.version"),
        (message({"a": 1}, type="swid"), "rvps.type"),
        (message({"a": 1}, type="corim"), "rvps.type"),
        ({"version": "0.1.0", "type": "sample"}, "rvps.message"),
        ({"version": "0.1.0", "type": "sample", "payload": "!!!"}, "encoding.base64"),
        ({"version": "0.1.0", "type": "sample", "payload": "W10="}, "rvps.payload"),  # []
        ({"version": "0.1.0", "type": "sample", "payload": "bm90IGpzb24="}, "rvps.payload"),
        (message({"": 1}), "rvps.name"),
        ([], "rvps.message"),
    ],
)
def test_bad_messages(msg: Any, reason: str) -> None:
    with pytest.raises(EvidenceError) as exc:
        ReferenceValueStore(MemoryStore(), FixedClock(T0)).register(msg)
    assert exc.value.reason == reason


def test_add_months_clamps() -> None:
    assert add_months(dt.datetime(2026, 1, 31), 1) == dt.datetime(2026, 2, 28)
    assert add_months(dt.datetime(2027, 12, 15), 12) == dt.datetime(2028, 12, 15)
    assert add_months(dt.datetime(2027, 11, 30), 3) == dt.datetime(2028, 2, 29)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        st.dictionaries(
            st.sampled_from(["version", "type", "payload", "x"]),
            st.one_of(st.text(max_size=40), st.integers(), st.none()),
        ),
        st.builds(
            message,
            st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4),
        ),
        st.builds(
            lambda b: {
                "version": "0.1.0",
                "type": "sample",
                "payload": base64.b64encode(b).decode(),
            },
            st.binary(max_size=64),
        ),
    )
)
def test_parse_message_random(msg: Any) -> None:
    try:
        records = parse_message(msg, T0)
    except EvidenceError:
        return
    for record in records:
        assert record.expiration == dt.datetime(2027, 1, 31, 12, 0, 0, tzinfo=dt.UTC)
