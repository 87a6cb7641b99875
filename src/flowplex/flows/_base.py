"""``Flow`` and ``AtomicFlow``: the unit of work flowplex serves, mounts and runs."""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import json
import sys
import traceback
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from .._json import dumps
from ..config import deep_merge, ensure_json_serializable, load_yaml, require_keys
from ..errors import FlowDefinitionError, MessagingError
from ..messages import FlowMessage, ReplyMode
from ._interfaces import KeyInterface
from ._transport import Transport, run_coroutine_sync

__all__ = [
    "ORIGIN",
    "AtomicFlow",
    "Flow",
    "build_flow",
    "check_state",
    "error_reply",
    "origin_of",
    "rollback_state",
    "run_message",
]

F = TypeVar("F", bound="Flow")


class Flow:
    """The base of every flow.

    A flow has a ``flow_config`` (a dict with at least ``name`` and ``description``) and a
    ``flow_state`` (a JSON-serializable dict that the runtime persists between messages). Its
    :meth:`run` handles one input message and replies either by returning a dict or by
    ``self.send_message(self.package_output_message(input_message, data))``.

    The default config of a class is its ``default_config`` attribute, or a ``<ClassName>.yaml``
    file beside its module; defaults of base classes are merged first, and overrides last
    (see :meth:`get_config`).
    """

    #: Config keys every flow must have.
    REQUIRED_CONFIG_KEYS: ClassVar[tuple[str, ...]] = ("name", "description")

    #: The class's own default config (merged over its bases'); a YAML file beside the module
    #: named after the class is used when this is None.
    default_config: ClassVar[Mapping[str, Any] | None] = {"private_keys": []}

    #: Whether ``input_interface`` / ``output_interface`` in the config are applied. Classes that
    #: keep them as documentation only (those of :mod:`flowplex.compat`) set it to False.
    apply_config_interfaces: ClassVar[bool] = True

    #: Whether a run remembers where its conversation started (see :func:`origin_of`): set
    #: by flows whose requests come back to them as pushed replies (composites).
    keeps_origin: ClassVar[bool] = False

    def __init__(
        self, flow_config: Mapping[str, Any], flow_state: Mapping[str, Any] | None = None
    ) -> None:
        if not isinstance(flow_config, Mapping):
            raise FlowDefinitionError(
                f"{type(self).__name__} needs a flow_config mapping, got "
                f"{type(flow_config).__name__}."
            )
        require_keys(
            flow_config, self.REQUIRED_CONFIG_KEYS, f"flow config of {type(self).__name__}"
        )
        self.flow_config: dict[str, Any] = copy.deepcopy(dict(flow_config))
        private = self.flow_config.get("private_keys") or []
        if not isinstance(private, list) or not all(isinstance(k, str) for k in private):
            raise FlowDefinitionError(
                f"{self.name}: private_keys must be a list of key names, got {private!r}."
            )
        self._input_interface: KeyInterface | None = None
        self._output_interface: KeyInterface | None = None
        if self.apply_config_interfaces:
            self._input_interface = KeyInterface.parse(
                self.flow_config.get("input_interface"), f"{self.name}.input_interface"
            )
            self._output_interface = KeyInterface.parse(
                self.flow_config.get("output_interface"), f"{self.name}.output_interface"
            )
        self._transport: Transport | None = None
        # The conversation the running message belongs to (see origin_of); set per run.
        self._origin: dict[str, Any] | None = None
        self.flow_state: dict[str, Any] = {}
        self.set_up_flow_state()
        if flow_state:
            self.flow_state.update(copy.deepcopy(dict(flow_state)))
        pack_messages(self.flow_state)
        ensure_json_serializable(self.flow_state, f"{self.name}.flow_state")

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def get_config(cls, **overrides: Any) -> dict[str, Any]:
        """The default config, merged down the class hierarchy, with ``overrides`` on top."""
        config: dict[str, Any] = {}
        for klass in reversed(cls.__mro__):
            if isinstance(klass, type) and issubclass(klass, Flow):
                config = deep_merge(config, _own_default_config(klass))
        return deep_merge(config, overrides)

    @classmethod
    def instantiate_from_default_config(cls, **overrides: Any) -> Self:
        """A new flow from :meth:`get_config` with ``overrides``."""
        return build_flow(cls, cls.get_config(**overrides))

    @classmethod
    def instantiate_from_config(cls, config: Mapping[str, Any]) -> Self:
        """A new flow from a complete config (no defaults merged)."""
        return build_flow(cls, config)

    def set_up_flow_state(self) -> None:
        """Give ``flow_state`` its initial keys; override to add yours (it starts empty)."""

    # -- identity ---------------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The ``name`` from the flow config."""
        return str(self.flow_config["name"])

    def get_instance_id(self) -> str:
        """The id of this flow instance (``flow_id`` in its config), or ``"unmounted"``."""
        return str(self.flow_config.get("flow_id", "unmounted"))

    # -- running ----------------------------------------------------------------------------

    def run(self, input_message: FlowMessage) -> Any:
        """Handle one input message. Override it (plain or ``async def``).

        Return a dict to reply with it, or None after replying with :meth:`send_message` (or
        when no reply is due).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement run(input_message).")

    def attach(self, transport: Transport) -> None:
        """Connect this flow to the runtime that runs it (called by the runtime)."""
        self._transport = transport

    @property
    def user_id(self) -> str:
        """The user this flow runs for, as its runtime says (``"local"`` when detached)."""
        return self._transport.user_id if self._transport is not None else "local"

    # -- messages ---------------------------------------------------------------------------

    def package_input_message(
        self,
        data: dict[str, Any],
        dst_flow: str = "unknown",
        reply_data: dict[str, Any] | None = None,
    ) -> FlowMessage:
        """A new message from this flow carrying ``data``."""
        return FlowMessage(
            data=dict(data),
            src_flow=self.name,
            src_flow_id=self.get_instance_id(),
            dst_flow=dst_flow,
            reply_data=reply_data or {"mode": ReplyMode.NO_REPLY.value},
            user_id=self.user_id,
            private_keys=list(self.flow_config.get("private_keys") or []),
        )

    def package_output_message(
        self, input_message: FlowMessage, response: dict[str, Any]
    ) -> FlowMessage:
        """The reply to ``input_message`` carrying ``response`` (through the output interface)."""
        if not isinstance(response, dict):
            raise MessagingError(
                f"{self.name}: a reply must be a dict, got {type(response).__name__}."
            )
        if self._output_interface is not None:
            response = self._output_interface.apply(response, f"{self.name} output_interface")
        return FlowMessage(
            data=dict(response),
            src_flow=self.name,
            src_flow_id=self.get_instance_id(),
            dst_flow=input_message.src_flow,
            reply_data=dict(input_message.reply_data),
            input_message_id=input_message.input_message_id,
            is_reply=True,
            user_id=self.user_id,
            private_keys=list(self.flow_config.get("private_keys") or []),
        )

    def package_error_message(
        self, input_message: FlowMessage, error: BaseException | str
    ) -> FlowMessage:
        """An error reply to ``input_message``; the caller's future raises :class:`FlowError`.

        A flow rarely needs it (raising in ``run`` replies with the error), except to fail a
        request it answers later, as non-blocking composites do.
        """
        return error_reply(input_message, error, self.name, self.get_instance_id())

    def send_message(self, message: FlowMessage) -> None:
        """Send a reply (built with :meth:`package_output_message`) back to whoever asked.

        To send a request to another flow, use a proxy: ``self.subflows[key].send_message``.
        """
        if not isinstance(message, FlowMessage):
            raise MessagingError(f"expected a FlowMessage, got {type(message).__name__}.")
        if not message.is_reply:
            raise MessagingError(
                f"{self.name}.send_message sends replies; to message another flow use a proxy "
                f"(self.subflows[key].send_message / get_reply / get_reply_future)."
            )
        if self._transport is None:
            raise MessagingError(
                f"{self.name} is not attached to a runtime: run it with flowplex.LocalRuntime / "
                f"flowplex.run_local, or serve it."
            )
        origin = self._origin
        if origin is not None and message.reply_data == origin.get("reply_data"):
            # The conversation's caller is answered: requests sent after this (the next
            # request the flow kept waiting, say) start a conversation it does not know the
            # caller of, so their failures are no longer this caller's.
            self._origin = None
        self._transport.send_reply(message.without_private_keys())

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.flow_config.get('name')!r} id={self.get_instance_id()}>"
        )


class AtomicFlow(Flow):
    """A flow that does its work itself, without subflows."""


def build_flow(
    cls: type[F], flow_config: Mapping[str, Any], flow_state: Mapping[str, Any] | None = None
) -> F:
    """``cls(flow_config, flow_state)``: how the runtime builds every flow it mounts or runs.

    A constructor that takes only keywords (``def __init__(self, **kwargs)``, passing them on
    to ``super().__init__``) is called as ``cls(flow_config=..., flow_state=...)``. A
    constructor that can be called neither way raises :class:`FlowDefinitionError` saying why.
    """
    style = _call_style(cls)
    if style == "keywords":
        return cls(flow_config=flow_config, flow_state=flow_state)
    if style is not None and style != "positional":
        raise FlowDefinitionError(
            f"{cls.__qualname__} cannot be built as {cls.__qualname__}(flow_config, flow_state): "
            f"{style}. A flow's constructor must accept the flow config and the initial state."
        )
    return cls(flow_config, flow_state)


def _call_style(cls: type[Flow]) -> str | None:
    """How ``cls`` takes its config and state: ``"positional"``, ``"keywords"``, why neither
    works, or None when its constructor has no signature to tell (it is then simply tried).
    Cached per class, since every mount and every worker asks."""
    if cls in _CALL_STYLES:
        return _CALL_STYLES[cls]
    style: str | None
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        style = None
    else:
        try:
            signature.bind({}, None)
            style = "positional"
        except TypeError as exc:
            try:
                signature.bind(flow_config={}, flow_state=None)
                style = "keywords"
            except TypeError:
                style = str(exc)
    _CALL_STYLES[cls] = style
    return style


_CALL_STYLES: weakref.WeakKeyDictionary[type[Flow], str | None] = weakref.WeakKeyDictionary()


#: The key a :class:`FlowMessage` kept in ``flow_state`` is stored under (see pack_messages).
MESSAGE_TAG = "__flowmessage__"


def pack_messages(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with every :class:`FlowMessage` in it (in dicts and lists, at any depth)
    replaced by ``{"__flowmessage__": <its dict form>}``, so that a flow may keep the messages it
    answers later in its state, which is stored as JSON. Changes ``state`` in place."""
    if type(state) is dict:
        for key, item in state.items():
            if type(item) in _CONTAINERS or isinstance(item, FlowMessage):
                state[key] = _pack(item)
    return state


def unpack_messages(state: dict[str, Any]) -> dict[str, Any]:
    """The reverse of :func:`pack_messages` (in place): tagged dicts become messages again."""
    if type(state) is dict:
        for key, item in state.items():
            if type(item) in _CONTAINERS:
                state[key] = _unpack(item)
    return state


_CONTAINERS = (dict, list)


def _pack(value: Any) -> Any:
    if isinstance(value, FlowMessage):
        return {MESSAGE_TAG: value.to_dict()}
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        if type(item) in _CONTAINERS or isinstance(item, FlowMessage):
            value[key] = _pack(item)
    return value


def _unpack(value: Any) -> Any:
    if type(value) is dict and len(value) == 1 and MESSAGE_TAG in value:
        return FlowMessage.from_dict(value[MESSAGE_TAG])
    items = value.items() if type(value) is dict else enumerate(value)
    for key, item in items:
        if type(item) in _CONTAINERS:
            value[key] = _unpack(item)
    return value


def run_message(flow: Flow, message: FlowMessage) -> None:
    """Run one message through an attached flow.

    Applies the input interface (to requests only: replies pushed back to a composite carry
    its subflows' outputs, not its inputs), calls ``run`` (awaiting it if it is a coroutine),
    sends the returned dict as the reply, and checks that ``flow_state`` is still JSON-serializable.
    Messages the flow keeps in ``flow_state`` are packed for storage after the run and unpacked
    before the next (see :func:`pack_messages`). Exceptions propagate; the runtime turns them
    into an :func:`error_reply`.
    """
    if flow.keeps_origin:
        flow._origin = origin_of(message, flow.flow_state)
    unpack_messages(flow.flow_state)
    data = message.data
    if flow._input_interface is not None and not message.is_reply:
        data = flow._input_interface.apply(data, f"{flow.name} input_interface")
        message = message.replace(data=data)
    result = flow.run(message)
    if inspect.isawaitable(result):
        result = run_coroutine_sync(result)
    if result is not None:
        if not isinstance(result, dict):
            raise FlowDefinitionError(
                f"{flow.name}.run returned {type(result).__name__}; return a dict to reply "
                f"with it, or None."
            )
        flow.send_message(flow.package_output_message(message, result))
    check_state(flow)


def check_state(flow: Flow) -> str:
    """``flow_state`` as JSON, its messages packed (see :func:`pack_messages`);
    :class:`FlowStateError` naming the bad value if it is not JSON."""
    try:
        return dumps(flow.flow_state)
    except TypeError:
        # Only the rare state holding messages needs packing: it is tried once dumping failed.
        with contextlib.suppress(RecursionError):
            pack_messages(flow.flow_state)
    except (ValueError, RecursionError):
        pass
    try:
        return dumps(flow.flow_state)
    except (TypeError, ValueError, RecursionError):
        ensure_json_serializable(flow.flow_state, f"{flow.name}.flow_state")
        raise


#: The ``reply_data`` key of a pushed request that says where its conversation started.
ORIGIN = "origin"


def origin_of(message: FlowMessage, state: Mapping[str, Any]) -> dict[str, Any] | None:
    """Where the conversation ``message`` belongs to started, for the requests a composite
    sends while handling it with ``get_reply``: ``{"reply_data": <the original request's>,
    "state": <the composite's state before it>}``.

    A request starts a conversation (``state`` is the state it runs on, as stored); a pushed
    reply carries the origin of the request that asked for it. So whatever step of a
    non-blocking conversation fails, the runtime answers the original caller with the error
    and puts the composite back in the state from before the conversation.
    """
    if message.is_reply:
        origin = message.reply_data.get(ORIGIN)
        return origin if isinstance(origin, dict) else None
    try:
        before: Any = json.loads(dumps(state))
    except (TypeError, ValueError):
        before = None  # not stored as it is (a caller's own state): nothing to roll back to
    return {"reply_data": message.reply_data, "state": before}


def rollback_state(message: FlowMessage) -> dict[str, Any] | None:
    """The state a composite goes back to when it fails on the pushed reply ``message``: its
    state from before the conversation began (None: keep the stored one)."""
    if not message.is_reply:
        return None
    origin = message.reply_data.get(ORIGIN)
    state = origin.get("state") if isinstance(origin, dict) else None
    return state if isinstance(state, dict) else None


def error_reply(
    message: FlowMessage, exc: BaseException | str, src_flow: str, src_flow_id: str
) -> FlowMessage:
    """The error reply to ``message``: ``data={"error": ...}`` plus a structured ``error`` field.

    Nobody waits for an answer to a reply, so the error reply to a *reply* (a failure while
    handling a pushed reply) goes to the caller whose request started the conversation
    (the reply's ``origin``, see :func:`origin_of`), or, without one, to no one: the runtime
    logs it instead of routing it, which would send it straight back to the failing flow.
    """
    if isinstance(exc, BaseException):
        kind, text = type(exc).__name__, str(exc) or type(exc).__name__
        trace = "".join(traceback.format_exception(exc))
    else:
        kind, text, trace = "FlowError", str(exc), ""
    if message.is_reply:
        origin = message.reply_data.get(ORIGIN)
        routed = origin.get("reply_data") if isinstance(origin, dict) else None
        no_reply = {"mode": ReplyMode.NO_REPLY.value}
        reply_data = copy.deepcopy(routed) if isinstance(routed, dict) else no_reply
    else:
        reply_data = copy.deepcopy(message.reply_data)
    return FlowMessage(
        data={"error": f"{kind}: {text}"},
        src_flow=src_flow,
        src_flow_id=src_flow_id,
        dst_flow=message.src_flow,
        reply_data=reply_data,
        input_message_id=message.input_message_id,
        is_reply=True,
        error={"type": kind, "message": text, "traceback": trace},
    )


@functools.cache
def _yaml_config(path: Path) -> dict[str, Any]:
    return load_yaml(path)


def _own_default_config(klass: type[Flow]) -> dict[str, Any]:
    own = klass.__dict__.get("default_config")
    if own is not None:
        if not isinstance(own, Mapping):
            raise FlowDefinitionError(f"{klass.__name__}.default_config must be a mapping.")
        return dict(own)
    module = sys.modules.get(klass.__module__)
    module_file = getattr(module, "__file__", None)
    if module_file:
        candidate = Path(module_file).with_name(f"{klass.__name__}.yaml")
        if candidate.is_file():
            return copy.deepcopy(_yaml_config(candidate))
    return {}
