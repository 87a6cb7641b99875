"""flowplex.messages: the FlowMessage envelope, its JSON wire format and reply modes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flowplex.errors import MessagingError
from flowplex.messages import FlowMessage, ReplyMode


def _full_message() -> FlowMessage:
    return FlowMessage(
        data={"number": 1234, "nested": {"list": [1, "two", None, 3.5, True]}},
        src_flow="Caller",
        src_flow_id="flow-1",
        dst_flow="ReverseNumberAtomicFlow",
        reply_data={"mode": "push", "flow_id": "flow-1", "user_id": "alice"},
        created_by="Proxy",
        input_message_id="msg-0",
        is_reply=True,
        user_id="alice",
        private_keys=["secret"],
        error={"type": "ValueError", "message": "bad", "traceback": "Traceback ..."},
        message_id="msg-1",
        created_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        message_type="CustomMessage",
    )


# --- defaults ---------------------------------------------------------------------------------


def test_defaults() -> None:
    before = datetime.now(UTC)
    msg = FlowMessage(data={"x": 1}, src_flow="Caller")
    after = datetime.now(UTC)

    assert uuid.UUID(msg.message_id).version == 4
    assert str(uuid.UUID(msg.message_id)) == msg.message_id
    assert msg.created_at.tzinfo is not None
    assert msg.created_at.utcoffset() == timedelta(0)
    assert before <= msg.created_at <= after
    assert msg.created_by == "Caller"
    assert msg.input_message_id == msg.message_id
    assert msg.reply_data == {"mode": "no_reply"}
    assert msg.reply_mode is ReplyMode.NO_REPLY
    assert msg.is_reply is False
    assert msg.src_flow_id == "unknown"
    assert msg.dst_flow == "unknown"
    assert msg.user_id is None
    assert msg.private_keys == []
    assert msg.error is None
    assert msg.message_type == "FlowMessage"


def test_each_message_gets_a_fresh_id_and_its_own_containers() -> None:
    first, second = FlowMessage(data={}), FlowMessage(data={})

    assert first.message_id != second.message_id
    assert first.reply_data is not second.reply_data
    assert first.private_keys is not second.private_keys


def test_created_by_defaults_to_unknown_src_flow() -> None:
    assert FlowMessage(data={}).created_by == "unknown"


def test_explicit_created_by_and_input_message_id_are_kept() -> None:
    msg = FlowMessage(data={}, src_flow="A", created_by="B", input_message_id="root")

    assert msg.created_by == "B"
    assert msg.input_message_id == "root"


def test_naive_created_at_is_rejected() -> None:
    with pytest.raises(MessagingError, match="timezone-aware"):
        FlowMessage(data={}, created_at=datetime(2024, 1, 1))


@pytest.mark.parametrize("created_at", [None, 5, "yesterday", ["2024-01-01"]])
def test_a_wire_created_at_that_is_no_timestamp_is_named(created_at: object) -> None:
    with pytest.raises(MessagingError, match="created_at is not an ISO-8601 timestamp"):
        FlowMessage.from_dict({"data": {}, "created_at": created_at})


# --- reply modes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("future", ReplyMode.FUTURE),
        ("push", ReplyMode.PUSH),
        ("no_reply", ReplyMode.NO_REPLY),
        (ReplyMode.PUSH, ReplyMode.PUSH),
        ("storage", ReplyMode.FUTURE),
    ],
)
def test_reply_mode(mode: str, expected: ReplyMode) -> None:
    msg = FlowMessage(data={}, reply_data={"mode": mode, "flow_id": "f"})

    assert msg.reply_mode is expected
    assert msg.reply_data == {"mode": expected.value, "flow_id": "f"}
    assert type(msg.reply_data["mode"]) is str


def test_reply_data_without_mode_is_no_reply() -> None:
    assert FlowMessage(data={}, reply_data={"flow_id": "f"}).reply_mode is ReplyMode.NO_REPLY


def test_legacy_storage_mode_parses_as_future_from_json() -> None:
    text = json.dumps({"data": {}, "reply_data": {"mode": "storage"}})

    msg = FlowMessage.from_json(text)

    assert msg.reply_mode is ReplyMode.FUTURE
    assert msg.reply_data == {"mode": "future"}


def test_unknown_reply_mode_lists_the_valid_ones() -> None:
    with pytest.raises(MessagingError, match="unknown reply mode 'carrier_pigeon'") as info:
        FlowMessage(data={}, reply_data={"mode": "carrier_pigeon"})
    for mode in ("future", "push", "no_reply"):
        assert mode in str(info.value)


def test_unhashable_reply_mode_raises_messaging_error() -> None:
    with pytest.raises(MessagingError, match="unknown reply mode"):
        FlowMessage.from_dict({"data": {}, "reply_data": {"mode": ["future"]}})


# --- JSON round trip --------------------------------------------------------------------------


def test_json_round_trip_keeps_every_field() -> None:
    original = _full_message()

    text = original.to_json()
    restored = FlowMessage.from_json(text)

    assert restored == original
    assert restored.created_at == datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    assert restored.error == {"type": "ValueError", "message": "bad", "traceback": "Traceback ..."}
    assert restored.is_reply is True
    assert restored.reply_mode is ReplyMode.PUSH


def test_json_round_trip_of_a_default_message() -> None:
    original = FlowMessage(data={"number": 7}, src_flow="Caller")

    assert FlowMessage.from_json(original.to_json()) == original
    assert FlowMessage.from_json(original.to_json().encode("utf-8")) == original


def test_to_json_is_compact_and_has_an_iso_timestamp() -> None:
    text = _full_message().to_json()

    assert ", " not in text
    assert ": " not in text
    raw = json.loads(text)
    assert raw["created_at"] == "2024-05-06T07:08:09.123456+00:00"
    assert raw["message_id"] == "msg-1"
    assert set(raw) == {
        "message_id",
        "created_at",
        "message_type",
        "created_by",
        "data",
        "src_flow",
        "src_flow_id",
        "dst_flow",
        "reply_data",
        "input_message_id",
        "is_reply",
        "user_id",
        "private_keys",
        "error",
    }


def test_from_dict_ignores_unknown_keys() -> None:
    raw = _full_message().to_dict()
    raw["priority"] = "high"
    raw["routing"] = {"via": "relay"}

    msg = FlowMessage.from_dict(raw)

    assert msg == _full_message()
    assert not hasattr(msg, "priority")


def test_from_dict_naive_timestamp_is_taken_as_utc() -> None:
    msg = FlowMessage.from_dict({"data": {}, "created_at": "2024-01-02T03:04:05"})

    assert msg.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert msg.created_at.tzinfo is not None


def test_from_dict_keeps_an_explicit_offset() -> None:
    msg = FlowMessage.from_dict({"data": {}, "created_at": "2024-01-02T05:04:05+02:00"})

    assert msg.created_at.utcoffset() == timedelta(hours=2)
    assert msg.created_at == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_from_dict_minimal_gets_defaults() -> None:
    msg = FlowMessage.from_dict({"data": {"a": 1}})

    assert msg.data == {"a": 1}
    assert msg.input_message_id == msg.message_id
    assert msg.reply_mode is ReplyMode.NO_REPLY


# --- invalid input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": [1, 2]}, "data must be a dict, got list"),
        ({"data": None}, "data must be a dict, got NoneType"),
        ({"data": {}, "reply_data": "future"}, "reply_data must be a dict, got str"),
        ({"data": {}, "reply_data": {"mode": "sometime"}}, "unknown reply mode 'sometime'"),
        ({"data": {}, "created_at": "yesterday"}, "created_at is not an ISO-8601 timestamp"),
        ({"data": {}, "created_at": 1700000000}, "created_at is not an ISO-8601 timestamp"),
        ({"data": {}, "is_reply": "true"}, "is_reply must be true or false"),
        ({"data": {}, "is_reply": 1}, "is_reply must be true or false"),
        ({"data": {}, "private_keys": "secret"}, "private_keys must be a list"),
        ({"data": {}, "message_id": 5}, "message_id must be a string"),
        ({"data": {}, "src_flow": None}, "src_flow must be a string"),
        ({"data": {}, "dst_flow": ["x"]}, "dst_flow must be a string"),
        ({"src_flow": "A"}, "needs a 'data' field"),
        ([{"data": {}}], "must be a JSON object, got list"),
        ("text", "must be a JSON object, got str"),
    ],
)
def test_from_dict_rejects_invalid_input(raw: Any, message: str) -> None:
    with pytest.raises(MessagingError) as info:
        FlowMessage.from_dict(raw)
    assert message in str(info.value)


def test_constructor_rejects_non_dict_data() -> None:
    with pytest.raises(MessagingError, match="data must be a dict, got str"):
        FlowMessage(data="hello")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "must be valid JSON"),
        ("", "must be valid JSON"),
        (b"\xff\xfe", "must be valid JSON"),
        ("[1, 2]", "must be a JSON object, got list"),
        ("null", "must be a JSON object, got NoneType"),
        ('"a string"', "must be a JSON object, got str"),
        ('{"src_flow": "A"}', "needs a 'data' field"),
        ('{"data": 3}', "data must be a dict, got int"),
    ],
)
def test_from_json_rejects_invalid_input(text: str | bytes, message: str) -> None:
    with pytest.raises(MessagingError) as info:
        FlowMessage.from_json(text)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        ({"when": datetime(2024, 1, 1, tzinfo=UTC)}, "datetime"),
        ({"tags": {"a"}}, "set"),
        ({"x": float("nan")}, "Out of range float"),
    ],
)
def test_to_json_of_non_serializable_data(data: dict[str, Any], detail: str) -> None:
    msg = FlowMessage(data=data, message_id="msg-42")

    with pytest.raises(MessagingError) as info:
        msg.to_json()
    message = str(info.value)
    assert "message msg-42 cannot be sent" in message
    assert "not JSON-serializable" in message
    assert detail in message


# --- private keys and replace ---------------------------------------------------------------


def test_without_private_keys_strips_them_and_keeps_the_original() -> None:
    original = FlowMessage(
        data={"question": "q", "api_key": "s3cret", "token": "t"},
        private_keys=["api_key", "token", "not_present"],
    )

    public = original.without_private_keys()

    assert public.data == {"question": "q"}
    assert public.message_id == original.message_id
    assert public.created_at == original.created_at
    assert original.data == {"question": "q", "api_key": "s3cret", "token": "t"}
    assert public is not original
    assert "s3cret" not in public.to_json()


def test_without_private_keys_when_there_are_none() -> None:
    msg = FlowMessage(data={"a": 1})

    assert msg.without_private_keys().data == {"a": 1}


def test_replace_keeps_message_id() -> None:
    original = _full_message()

    changed = original.replace(data={"number": 4321}, is_reply=False)

    assert changed.message_id == "msg-1"
    assert changed.data == {"number": 4321}
    assert changed.is_reply is False
    assert changed.created_at == original.created_at
    assert changed.input_message_id == "msg-0"
    assert changed.error == original.error
    assert original.data == {"number": 1234, "nested": {"list": [1, "two", None, 3.5, True]}}
    assert original.is_reply is True


def test_replace_can_change_message_id() -> None:
    original = _full_message()

    changed = original.replace(message_id="msg-2")

    assert changed.message_id == "msg-2"
    assert original.message_id == "msg-1"
    assert changed.input_message_id == "msg-0"


def test_replace_validates_the_changes() -> None:
    with pytest.raises(MessagingError, match="unknown reply mode 'sideways'"):
        _full_message().replace(reply_data={"mode": "sideways"})


def test_replace_rejects_an_unknown_field() -> None:
    with pytest.raises(TypeError, match="colour"):
        _full_message().replace(colour="blue")


def test_new_ids_are_version_4_uuids_and_differ_in_forked_children() -> None:
    """new_id gives RFC 4122 version-4 UUIDs, and a forked child does not repeat its parent's."""
    import os

    from flowplex.messages import new_id

    ids = [new_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, text)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next id, then leave without running pytest's teardown
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child_id = os.read(read, 64).decode()
    os.close(read)
    assert child_id != new_id()
