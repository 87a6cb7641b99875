"""The message envelope every flow sends and receives, and how replies are routed.

A :class:`FlowMessage` travels as JSON (``to_json`` / ``from_json``).
Its ``reply_data`` says where the reply to it goes, one of the :class:`ReplyMode` values:

``future``
    the reply resolves a future the sender holds (``get_reply_future``);
``push``
    the reply is delivered to the flow instance ``reply_data["flow_id"]`` of user
    ``reply_data["user_id"]`` as a new input message (``get_reply``: the non-blocking style);
``no_reply``
    nobody waits; a reply, if the flow sends one, is dropped (``send_message``).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from ._json import dumps
from .errors import MessagingError

__all__ = ["FlowMessage", "ReplyMode"]


class ReplyMode(StrEnum):
    """Where the reply to a message goes (see the module doc)."""

    FUTURE = "future"
    PUSH = "push"
    NO_REPLY = "no_reply"


#: Joins a future id to the instance its request went to (``<id>@<flow id>``): only a reply
#: from that instance may complete the future.
FUTURE_SEP = "@"

# aiflows called the future mode "storage"; messages written by its tools still parse.
_MODE_ALIASES = {"storage": ReplyMode.FUTURE}

_FIELDS = (
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
)


_MODES = frozenset(m.value for m in ReplyMode)
_NO_REPLY = ReplyMode.NO_REPLY.value


_FIELD_SET = frozenset(_FIELDS)
# Fields whose new values replace() may take without re-validation.
_UNCHECKED = frozenset({"message_id", "src_flow", "src_flow_id", "dst_flow", "user_id"})


def new_id() -> str:
    """A random (version 4) UUID as a string.

    Ids name messages and instances; they must not collide, but nothing relies on them being
    unguessable (a user's access is checked by the node, not by knowing an id). So they come
    from a Mersenne Twister seeded from ``os.urandom`` (reseeded in forked children) instead of
    ``os.urandom`` itself, a system call costing ~10 µs on small VMs, five times per message.
    """
    n = (_ids.getrandbits(128) & _UUID_CLEAR) | _UUID4_BITS
    h = f"{n:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))
# Version 4 in bits 76-79, the RFC 4122 variant in bits 62-63.
_UUID_CLEAR = ~((0xF << 76) | (0x3 << 62)) & ((1 << 128) - 1)
_UUID4_BITS = (0x4 << 76) | (0x2 << 62)


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class FlowMessage:
    """A message to or from a flow.

    ``message_id`` is a fresh uuid4 and ``created_at`` the UTC time of creation, unless given.
    ``input_message_id`` chains a conversation: a new message points at itself, a reply keeps the
    ``input_message_id`` of the message it answers. ``error`` is set only on error replies, as
    ``{"type", "message", "traceback"}``; receiving futures raise :class:`~flowplex.FlowError`.
    ``private_keys`` name keys of ``data`` that are stripped before the message is sent.
    """

    data: dict[str, Any]
    src_flow: str = "unknown"
    src_flow_id: str = "unknown"
    dst_flow: str = "unknown"
    reply_data: dict[str, Any] = field(default_factory=lambda: {"mode": _NO_REPLY})
    created_by: str | None = None
    input_message_id: str | None = None
    is_reply: bool = False
    user_id: str | None = None
    private_keys: list[str] = field(default_factory=list)
    error: dict[str, str] | None = None
    message_id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=_now)
    message_type: str = "FlowMessage"

    def __post_init__(self) -> None:
        if not isinstance(self.data, dict):
            raise MessagingError(
                f"FlowMessage data must be a dict, got {type(self.data).__name__}."
            )
        if not isinstance(self.reply_data, dict):
            raise MessagingError(
                f"FlowMessage reply_data must be a dict, got {type(self.reply_data).__name__}."
            )
        mode = self.reply_data.get("mode")
        if mode not in _MODES if isinstance(mode, str) else mode is not None:
            if not isinstance(mode, str) or mode not in _MODE_ALIASES:
                modes = ", ".join(sorted(_MODES))
                raise MessagingError(
                    f"unknown reply mode {mode!r} in reply_data; expected one of {modes}."
                )
            # A new dict: the caller's reply_data is never rewritten in place.
            self.reply_data = {**self.reply_data, "mode": _MODE_ALIASES[mode].value}
        elif mode is None:
            self.reply_data = {**self.reply_data, "mode": _NO_REPLY}
        elif type(mode) is not str:  # a ReplyMode member: store the plain string
            self.reply_data = {**self.reply_data, "mode": str(mode)}
        if self.created_by is None:
            self.created_by = self.src_flow
        if self.input_message_id is None:
            self.input_message_id = self.message_id
        if self.created_at.tzinfo is None:
            raise MessagingError("FlowMessage created_at must be timezone-aware (UTC).")

    @property
    def reply_mode(self) -> ReplyMode:
        """The :class:`ReplyMode` of ``reply_data``."""
        return ReplyMode(self.reply_data["mode"])

    def without_private_keys(self) -> FlowMessage:
        """This message as it is sent: ``data`` without the keys in ``private_keys``."""
        if not self.private_keys:
            return self
        data = {k: v for k, v in self.data.items() if k not in self.private_keys}
        return self.replace(data=data)

    def replace(self, **changes: Any) -> FlowMessage:
        """A shallow copy with ``changes`` applied (same ``message_id`` unless changed)."""
        unknown = changes.keys() - _FIELD_SET
        if unknown:
            raise TypeError(f"FlowMessage has no field(s) {sorted(unknown)}.")
        clone = object.__new__(FlowMessage)
        for name in _FIELDS:
            setattr(clone, name, changes[name] if name in changes else getattr(self, name))
        # Only values that came from the caller need checking again.
        if not _UNCHECKED.issuperset(changes):
            clone.__post_init__()
        return clone

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict form (``created_at`` as an ISO-8601 UTC string)."""
        # Spelled out rather than looped over _FIELDS: this is on every message's path.
        return {
            "message_id": self.message_id,
            "created_at": self.created_at.isoformat(),
            "message_type": self.message_type,
            "created_by": self.created_by,
            "data": self.data,
            "src_flow": self.src_flow,
            "src_flow_id": self.src_flow_id,
            "dst_flow": self.dst_flow,
            "reply_data": self.reply_data,
            "input_message_id": self.input_message_id,
            "is_reply": self.is_reply,
            "user_id": self.user_id,
            "private_keys": self.private_keys,
            "error": self.error,
        }

    def to_json(self) -> str:
        """The wire format: compact JSON of :meth:`to_dict`."""
        try:
            return dumps(self.to_dict())
        except (TypeError, ValueError, RecursionError) as exc:
            raise MessagingError(
                f"message {self.message_id} cannot be sent: its data is not JSON-serializable "
                f"({exc})."
            ) from exc

    @classmethod
    def from_dict(cls, raw: Any) -> FlowMessage:
        """Build a message from its dict form, with a :class:`MessagingError` naming bad fields.

        Unknown keys are ignored, so newer senders can add fields.
        """
        if not isinstance(raw, dict):
            raise MessagingError(f"a FlowMessage must be a JSON object, got {type(raw).__name__}.")
        if "data" not in raw:
            raise MessagingError("a FlowMessage needs a 'data' field.")
        values = {k: raw[k] for k in _FIELDS if k in raw}
        created_at = values.get("created_at")
        if "created_at" in values and not isinstance(created_at, datetime):
            try:
                parsed = datetime.fromisoformat(str(created_at))
            except ValueError:
                raise MessagingError(
                    f"FlowMessage created_at is not an ISO-8601 timestamp: {created_at!r}."
                ) from None
            values["created_at"] = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        for name in ("message_id", "src_flow", "src_flow_id", "dst_flow"):
            if name in values and not isinstance(values[name], str):
                raise MessagingError(f"FlowMessage {name} must be a string.")
        if "is_reply" in values and not isinstance(values["is_reply"], bool):
            raise MessagingError("FlowMessage is_reply must be true or false.")
        if "private_keys" in values and not isinstance(values["private_keys"], list):
            raise MessagingError("FlowMessage private_keys must be a list of keys.")
        return cls(**values)

    @classmethod
    def from_json(cls, text: str | bytes) -> FlowMessage:
        """Parse the wire format written by :meth:`to_json`."""
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise MessagingError(f"a FlowMessage must be valid JSON: {exc}") from exc
        if type(raw) is dict and raw.keys() == _FIELD_SET and type(raw["data"]) is dict:
            # Exactly what to_json writes (flowplex's own queues): skip re-validating each
            # field, but still reject a body whose types do not hold up.
            try:
                return _from_wire(raw)
            except (TypeError, ValueError):
                pass
        return cls.from_dict(raw)


def _from_wire(raw: dict[str, Any]) -> FlowMessage:
    message = object.__new__(FlowMessage)
    for name in _FIELDS:
        setattr(message, name, raw[name])
    message.created_at = datetime.fromisoformat(raw["created_at"])
    if (
        message.created_at.tzinfo is None
        or type(message.reply_data) is not dict
        or message.reply_data.get("mode") not in _MODES
        or type(message.is_reply) is not bool
        or type(message.private_keys) is not list
        or type(message.message_id) is not str
    ):
        raise ValueError("not a canonical FlowMessage")
    return message
