"""The built-in task types.

=============  ==============================================================================
``noop``       completes at once.
``print``      prints ``msg``.
``log``        logs ``msg`` at ``log_level`` (default WARNING) on the ``flowplex.engine.tasks``
               logger, or prints it (``use_print``); ``dump_flow`` appends the flow dict as JSON.
``wire``       runs ``wirings`` (``"ctx.src => ctx.dest"`` or ``{src|value, dest, transform}``).
``switch``     runs the ``task`` of the first case whose ``condition`` (``{op, arg}``, ``op`` an
               :mod:`operator` comparison) holds for ``control_value``, else ``default_case``.
``spread``     maps ``items`` through ``mapping_params`` (``skeleton``, ``wirings``) into the
               tasks of a child flow, run as a ``container_task_type`` task (default
               ``inline_flow``).
``inline_flow``ticks the child flow ``flow_spec`` inside this task, over as many ticks as it
               needs; the child's data ends up in ``data.flow_data``.
``flow``       stores ``flow_spec`` as a child run (``depth + 1``, ``parent_key``) in the
               engine's store, for runners to tick; waits for it; ``data.flow_data`` as above.
``python``     calls ``fn`` (a dotted path) with ``args``/``kwargs`` (and ``ctx=`` the task
               context if the function takes a ``ctx`` parameter); the JSON-ready result goes to
               ``data.result``.
``call``       sends ``data`` to a served flow endpoint of the serving runtime (``flow_endpoint``,
               ``user_id`` default "local", ``config_overrides``; on another node with
               ``node_url`` or ``registry``, through a link of this node, which needs to be
               served by ``flowplex up`` for the reply to come back) and completes with its reply
               in ``data.reply``. It never blocks: the first tick sends, later ticks poll. The
               future id, instance id and node are kept in ``data.call``, so another runner
               that loads the saved flow collects the reply. ``timeout`` (seconds) fails it.
=============  ==============================================================================

Where the original engine's handlers were broken, these are not: ``inline_flow`` children may take
any number of ticks (the original failed on the second), ``log``'s ``dump_flow`` works (the
original called a missing method), ``switch`` accepts a falsy ``control_value`` such as 0, and
a handler's failure always reaches the engine (see :mod:`flowplex.engine._engine`).

``call`` delivers at least once: a runner that dies after sending but before saving the flow
sends again from the next runner. A reply is read without being removed from the runtime and
dropped only once the flow that used it is saved (``FlowEngine.hold_replies``, which a
``FlowRunner`` turns on), so a runner that dies in between loses nothing: the next one reads
the same reply.
"""

from __future__ import annotations

import inspect
import json
import logging
import operator
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..config import resolve_class_path
from ..flows import FlowProxy, InstanceAddress
from ._context import map_items, run_wiring
from ._engine import TaskContext, TaskHandler
from ._errors import EngineError, FlowExistsError
from ._graph import COMPLETED, FAILED, TaskFlow

if TYPE_CHECKING:
    from ..runtime import Client

__all__ = ["BUILTIN_HANDLERS", "TASK_TYPE_ALIASES"]

logger = logging.getLogger("flowplex.engine.tasks")

# Namespace of child run keys: a child's key is derived from its parent's key and task key, so
# a parent re-ticked after a runner crash finds the child it had already created.
_CHILD_NAMESPACE = uuid.UUID("6f0b7e4c-5a53-4b8e-9d0c-3c1f6a2e9b71")


def _require(params: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    if name not in params:
        raise EngineError(f"task_params needs {name!r}.")
    value = params[name]
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EngineError(f"task_params {name!r} must be a {names}, got {value!r}.")
    return value


def _noop(ctx: TaskContext) -> None:
    ctx.complete()


def _print(ctx: TaskContext) -> None:
    if "msg" not in ctx.params:
        raise EngineError("task_params needs 'msg'.")
    print(ctx.params["msg"])
    ctx.complete()


def _log(ctx: TaskContext) -> None:
    params = ctx.params
    msg = str(params.get("msg", ""))
    if params.get("dump_flow"):
        msg = f"{msg}\n{json.dumps(ctx.flow.to_flow_dict(), indent=2, sort_keys=True)}"
    if params.get("use_print"):
        print(msg)
    else:
        level = params.get("log_level", "WARNING")
        number = logging.getLevelName(str(level).upper())
        if not isinstance(number, int):
            raise EngineError(f"unknown log_level {level!r}.")
        logger.log(number, msg)
    ctx.complete()


def _wire(ctx: TaskContext) -> None:
    wirings = _require(ctx.params, "wirings", list)
    context = ctx.as_mapping()
    for wiring in wirings:
        run_wiring(wiring, context)
    ctx.complete()


_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "le": operator.le,
    "gt": operator.gt,
    "ge": operator.ge,
    "contains": operator.contains,
    "in": lambda value, arg: value in arg,
    "is_": operator.is_,
    "is_not": operator.is_not,
}


def _switch(ctx: TaskContext) -> None:
    if ctx.first_tick:
        params = ctx.params
        if "control_value" not in params:
            raise EngineError("task_params needs 'control_value'.")
        value = params["control_value"]
        chosen = None
        for i, case in enumerate(_require(params, "cases", list) if "cases" in params else []):
            condition = case.get("condition") if isinstance(case, Mapping) else None
            if not isinstance(condition, Mapping) or condition.get("op") not in _OPERATORS:
                raise EngineError(
                    f"case #{i} needs a condition {{'op', 'arg'}} with op one of "
                    f"{sorted(_OPERATORS)}."
                )
            if _OPERATORS[condition["op"]](value, condition.get("arg")):
                chosen = case
                break
        if chosen is None:
            chosen = params.get("default_case")
            if chosen is None:
                raise EngineError(
                    f"no case matched control_value {value!r} and there is no default_case."
                )
        _start_proxy(ctx, chosen.get("task") if isinstance(chosen, Mapping) else None)
    _tick_proxy(ctx)


def _spread(ctx: TaskContext) -> None:
    if ctx.first_tick:
        params = ctx.params
        mapping_params = _require(params, "mapping_params", Mapping)
        tasks = map_items(_require(params, "items", (list, dict)), mapping_params, ctx.as_mapping())
        spec = {"label": f"{ctx.task['key']}:spread", "tasks": tasks}
        container = params.get("container_task_type", "inline_flow")
        _start_proxy(ctx, {"task_type": container, "task_params": {"flow_spec": spec}})
    _tick_proxy(ctx)


def _start_proxy(ctx: TaskContext, task_spec: Any) -> None:
    if not isinstance(task_spec, Mapping) or not isinstance(task_spec.get("task_type"), str):
        raise EngineError(f"the task to run must be a task spec with a task_type: {task_spec!r}.")
    ctx.task["proxied_task"] = {
        **task_spec,
        "key": f"{ctx.task['key']}:proxied",
        "status": "PENDING",
    }


def _tick_proxy(ctx: TaskContext) -> None:
    proxied = ctx.task["proxied_task"]
    ctx.tick_subtask(proxied)
    if proxied["status"] == COMPLETED:
        ctx.task["data"] = proxied.get("data", {})
        ctx.complete()


def _child_flow_from(ctx: TaskContext, key: str | None) -> TaskFlow:
    child = TaskFlow.from_flow_spec(_require(ctx.params, "flow_spec", Mapping))
    child.depth = ctx.flow.depth + 1
    child.parent_key = ctx.flow.key
    if key is not None:
        child.key = key
    return child


def _finish_from_child(ctx: TaskContext, child: TaskFlow) -> None:
    if child.status == COMPLETED:
        ctx.data["flow_data"] = child.data
        ctx.complete()
    elif child.status == FAILED:
        ctx.fail(f"the child flow {child.label!r} failed: " + "; ".join(child.errors))


def _inline_flow(ctx: TaskContext) -> None:
    # The child lives in the task's data between ticks, so it is saved with the parent.
    child = _child_flow_from(ctx, None) if ctx.first_tick else TaskFlow._load(ctx.data["flow"])
    ctx.engine.tick_flow_until_has_no_pending(child, ctx.extra)
    ctx.data["flow"] = child._dump()
    _finish_from_child(ctx, child)


def _flow(ctx: TaskContext) -> None:
    store = ctx.engine.store
    if store is None:
        raise EngineError("a 'flow' task needs a store: FlowEngine(store=FlowStore(...)).")
    if ctx.first_tick:
        key = None
        if ctx.flow.key is not None:
            key = "flow:" + str(uuid.uuid5(_CHILD_NAMESPACE, f"{ctx.flow.key}/{ctx.task['key']}"))
        child = _child_flow_from(ctx, key)
        try:
            ctx.data["child_key"] = store.create_flow(child)
        except FlowExistsError:
            ctx.data["child_key"] = key
        return
    _finish_from_child(ctx, store.get_flow(ctx.data["child_key"]))


def _python(ctx: TaskContext) -> None:
    params = ctx.params
    path = _require(params, "fn", str)
    args = params.get("args", [])
    kwargs = params.get("kwargs", {})
    if not isinstance(args, Sequence) or isinstance(args, str) or not isinstance(kwargs, Mapping):
        raise EngineError("task_params 'args' must be a list and 'kwargs' a mapping.")
    fn = resolve_class_path(path.replace(":", "."))
    if not callable(fn):
        raise EngineError(f"fn {path!r} is not callable.")
    if _takes_ctx(fn):
        kwargs = {**kwargs, "ctx": ctx}
    result = fn(*args, **kwargs)
    try:
        json.dumps(result, allow_nan=False)  # as strict as the flow store
    except (TypeError, ValueError) as exc:
        raise EngineError(
            f"fn {path!r} returned {type(result).__name__}, which is not JSON-serializable ({exc})."
        ) from None
    ctx.data["result"] = result
    ctx.complete()


_TAKES_CTX: dict[Any, bool] = {}


def _takes_ctx(fn: Callable[..., Any]) -> bool:
    found = _TAKES_CTX.get(fn)
    if found is None:
        try:
            found = "ctx" in inspect.signature(fn).parameters
        except (TypeError, ValueError):
            found = False
        _TAKES_CTX[fn] = found
    return found


def _call(ctx: TaskContext) -> None:
    client = ctx.engine.client
    if client is None:
        raise EngineError(
            "a 'call' task needs a client of the serving runtime: FlowEngine(client=cl)."
        )
    params = ctx.params
    if ctx.first_tick:
        endpoint = _require(params, "flow_endpoint", str)
        data = params.get("data", {})
        if not isinstance(data, Mapping):
            raise EngineError("task_params 'data' must be a mapping (the message data).")
        timeout = params.get("timeout")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout <= 0):
            raise EngineError(f"task_params 'timeout' must be a positive number, got {timeout!r}.")
        proxy = _call_target(client, endpoint, params)
        future = proxy.get_reply_future(proxy.package_input_message(dict(data)))
        ctx.data["call"] = {
            "future_id": future.future_id,
            "flow_endpoint": endpoint,
            "flow_id": proxy.get_instance_id(),
            "user_id": proxy.user_id,
            "node": client.node.url,
            "sent_at": time.time(),
        }
        return
    call = ctx.data["call"]
    reply = client.peek_reply(call["future_id"])
    if reply is None:
        timeout = params.get("timeout")
        if timeout is not None and time.time() - call["sent_at"] > timeout:
            ctx.fail(f"no reply from {call['flow_endpoint']!r} within {timeout} s.")
        return
    ctx.engine._used_reply(client, call["future_id"])
    if reply.error is not None:
        err = reply.error
        ctx.fail(
            f"{call['flow_endpoint']!r} answered with an error: "
            f"{err.get('type', 'Exception')}: {err.get('message', '')}"
        )
        return
    ctx.data["reply"] = reply.data
    ctx.complete()


def _call_target(client: Client, endpoint: str, params: Mapping[str, Any]) -> FlowProxy:
    """The instance a ``call`` task sends to: mounted here, or on another node (``node_url`` or
    ``registry``) through a link of this node."""
    from .. import serving  # the serving runtime, only when a call task runs

    node_url, registry = params.get("node_url"), params.get("registry")
    if node_url is None and registry is None:
        return serving.get_flow_instance(
            client,
            endpoint,
            user_id=params.get("user_id", "local"),
            config_overrides=params.get("config_overrides"),
        )
    for name, value in (("node_url", node_url), ("registry", registry)):
        if value is not None and not isinstance(value, str):
            raise EngineError(f"task_params {name!r} must be a URL string, got {value!r}.")
    user_id = params.get("user_id", "local")
    link = client.node.mount_remote(
        client.get_user_id(),
        endpoint,
        node_url=node_url,
        registry=registry,
        remote_user=None if user_id == "local" else user_id,
        config_overrides=params.get("config_overrides"),
    )
    address = InstanceAddress(client.get_user_id(), link)
    return FlowProxy(client, address, flow_endpoint=endpoint)


#: The built-in task types (see the module docstring).
BUILTIN_HANDLERS: dict[str, TaskHandler] = {
    "call": _call,
    "flow": _flow,
    "inline_flow": _inline_flow,
    "log": _log,
    "noop": _noop,
    "print": _print,
    "python": _python,
    "spread": _spread,
    "switch": _switch,
    "wire": _wire,
}

#: Other names of built-in types: the module paths specs written for the original engine use
#: (``"mc.tasks.flow"`` is ``"flow"``). They follow an override of the type they alias.
TASK_TYPE_ALIASES: dict[str, str] = {
    f"mc.tasks.{name}": name for name in ("flow", "inline_flow", "log", "spread", "switch", "wire")
}
