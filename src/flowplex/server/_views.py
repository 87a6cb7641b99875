"""What the dashboard shows, read from the node, its runs, the mesh and the op store.

Each function returns plain values (dicts, lists, strings) for the templates; none renders
HTML. They are called in a worker thread (every read here may touch the database).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._json import preview
from ..runtime import InstanceStats, LogEntry, Node
from ._graph import draw_graph

if TYPE_CHECKING:
    from ..artifacts import OpStore
    from ..engine import FlowStore, TaskFlow
    from ..mesh import MeshService

__all__ = [
    "EndpointView",
    "InstanceView",
    "ago",
    "artifacts_view",
    "instance_view",
    "log_view",
    "node_view",
    "registry_view",
    "run_counts",
    "run_view",
    "runs_view",
    "stamp",
]

#: Runs listed on the runs page (newest first).
RUNS_SHOWN = 100


def ago(stamp: float | None, now: float | None = None) -> str:
    """``stamp`` (epoch seconds) as "12 s ago", "3 min ago", ... or "never"."""
    if not stamp:
        return "never"
    seconds = max(0.0, (time.time() if now is None else now) - stamp)
    if seconds < 60:
        return f"{seconds:.0f} s ago"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def stamp(value: float | None) -> str:
    """Epoch seconds as ``2026-12-03 13:45:01`` (local time), or ``""``."""
    if not value:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


@dataclass
class InstanceView:
    """One instance as a row of the dashboard (and of ``flowplex instances``)."""

    flow_id: str
    endpoint: str
    user_id: str
    client_id: str
    flow_class_name: str
    state: dict[str, Any]
    state_summary: str
    created_at: float
    stats: InstanceStats


@dataclass
class EndpointView:
    """A served (or unserved) endpoint with its instances."""

    endpoint: str
    user_id: str
    flow_class_name: str
    served: bool
    singleton: bool
    parallel_dispatch: bool
    dispatch_point: str
    instances: list[InstanceView] = field(default_factory=list)


def node_view(node: Node) -> dict[str, Any]:
    """Every user's endpoints with their instances and counts, and the node's totals."""
    backend = node.backend
    stats = backend.instance_stats()
    endpoints: list[EndpointView] = []
    for user in backend.list_users():
        views = {
            e.endpoint: EndpointView(
                e.endpoint,
                e.user_id,
                e.flow_class_name,
                e.served,
                e.singleton,
                e.parallel_dispatch,
                e.dispatch_point,
            )
            for e in backend.list_endpoints(user.user_id)
        }
        for record in backend.list_instances(user.user_id):
            view = views.get(record.endpoint)
            if view is None:  # an instance whose endpoint was deleted meanwhile
                continue
            view.instances.append(
                InstanceView(
                    record.flow_id,
                    record.endpoint,
                    record.user_id,
                    record.client_id,
                    record.flow_class_name,
                    record.state,
                    preview(record.state, 48),
                    record.created_at,
                    stats.get(record.flow_id) or InstanceStats(record.flow_id),
                )
            )
        endpoints.extend(views.values())
    instances = [i for e in endpoints for i in e.instances]
    totals = {
        "users": len({e.user_id for e in endpoints}),
        "endpoints": sum(1 for e in endpoints if e.served),
        "instances": len(instances),
        "queued": sum(i.stats.queued for i in instances),
        "in_flight": sum(i.stats.in_flight for i in instances),
        "dead_letters": sum(i.stats.dead_letters for i in instances),
        "errors": sum(1 for i in instances if i.stats.last_error),
    }
    return {"endpoints": endpoints, "instances": instances, "totals": totals}


def instance_view(node: Node, flow_id: str) -> dict[str, Any] | None:
    """One instance: its record, counts, message log and dead letters; None if there is none."""
    backend = node.backend
    record = backend.get_instance(flow_id)
    if record is None:
        return None
    stats = backend.instance_stats([flow_id])[flow_id]
    return {
        "record": record,
        "stats": stats,
        "state_json": json.dumps(record.state, indent=2, ensure_ascii=False),
        "config_json": json.dumps(record.config, indent=2, ensure_ascii=False),
        "log": [log_view(e) for e in backend.message_log(flow_id)],
        "log_limit": backend.log_limit,
        "dead_letters": [
            {"error": d.error, "deliveries": d.deliveries, "at": stamp(d.created_at)}
            for d in backend.list_dead_letters(flow_id)
        ],
    }


def _message_fields(text: str | None) -> tuple[str, dict[str, Any] | None]:
    """The data (or error) a message JSON carries, pretty-printed, and the message itself."""
    if text is None:
        return "", None
    try:
        message = json.loads(text)
    except ValueError:
        return text, None  # cut in the log: shown as stored
    if not isinstance(message, dict):
        return text, None
    data = message.get("data", message)
    return json.dumps(data, indent=2, ensure_ascii=False), message


def log_view(entry: LogEntry) -> dict[str, Any]:
    """A log entry for the template: the message's data, the reply's data or the error."""
    data, message = _message_fields(entry.body)
    reply, reply_message = _message_fields(entry.reply)
    error = entry.error
    if error is None and reply_message is not None and reply_message.get("error"):
        error = str(reply_message["error"].get("message") or reply_message["error"])
    return {
        "message_id": (message or {}).get("message_id", ""),
        "sender": (message or {}).get("src_flow", ""),
        "data": data,
        "reply": reply,
        "outcome": entry.outcome,
        "error": error,
        "deliveries": entry.deliveries,
        "duration_ms": f"{entry.duration * 1000:.1f}",
        "at": stamp(entry.finished_at),
        "ago": ago(entry.finished_at),
    }


# -- task-graph runs --------------------------------------------------------------------------


def _progress(flow: TaskFlow) -> tuple[int, int]:
    tasks = list(flow.iter_tasks())
    return sum(1 for t in tasks if t["status"] == "COMPLETED"), len(tasks)


def runs_view(store: FlowStore, status: str | None = None) -> dict[str, Any]:
    """The newest runs (of ``status`` if given) with their progress, and counts by status."""
    flows = store.query_flows(status=status, descending=True, limit=RUNS_SHOWN)
    counts = run_counts(store)
    rows = []
    for flow in flows:
        done, total = _progress(flow)
        rows.append(
            {
                "key": flow.key,
                "label": flow.label or "(no label)",
                "status": flow.status,
                "done": done,
                "total": total,
                "parent_key": flow.parent_key,
                "errors": flow.errors,
            }
        )
    return {"runs": rows, "counts": counts, "status": status}


def run_counts(store: FlowStore) -> dict[str, int]:
    """How many runs there are of each status (one grouped query)."""
    from sqlalchemy import func, select

    model = store.model
    query = select(model.status, func.count()).group_by(model.status)
    with store.engine.connect() as conn:
        return {str(status): int(count) for status, count in conn.execute(query)}


def run_view(store: FlowStore, key: str) -> dict[str, Any]:
    """One run: its graph, tasks with their status, outputs and errors, and its data."""
    flow = store.get_flow(key)
    done, total = _progress(flow)
    tasks = []
    for task in flow.iter_tasks():
        output = task.get("data")
        tasks.append(
            {
                "key": task["key"],
                "type": task.get("task_type", ""),
                "status": task["status"],
                "precursors": [p for p in task.get("precursors", ()) if p != "ROOT"],
                "error": task.get("error"),
                "output": json.dumps(output, indent=2, ensure_ascii=False) if output else "",
            }
        )
    data = {k: v for k, v in flow.data.items() if not k.startswith("_") and k != "errors"}
    children = store.query_flows(parent_key=key, descending=False, limit=200)
    return {
        "flow": flow,
        "done": done,
        "total": total,
        "tasks": tasks,
        "svg": draw_graph(flow.tasks, flow.edges),
        "data_json": json.dumps(data, indent=2, ensure_ascii=False) if data else "",
        "errors": flow.errors,
        "children": [{"key": c.key, "label": c.label, "status": c.status} for c in children],
    }


# -- registry and op store -----------------------------------------------------------------------


def registry_view(mesh: MeshService) -> dict[str, Any]:
    """The service, its peers and connections, the nodes it knows and the flows it lists."""
    state = mesh.state
    status = mesh.status()
    rows = sorted(state.rows(), key=lambda r: (str(r.get("node")), str(r.get("name"))))
    mesh_map = state.map()
    return {
        "status": status,
        "peers": sorted(state.peers),
        "connections": sorted(status["connection"].items()),
        "flows": rows,
        "map": mesh_map,
        "stats": dict(state.stats),
    }


def artifacts_view(store: OpStore) -> dict[str, Any]:
    """Every op with its versions (numbers and hashes), and the pipelines."""
    ops = []
    for name in store.list_ops():
        versions = [
            {
                "number": str(info.number),
                "version": str(info.version),
                "created": info.version.creation_time.strftime("%Y-%m-%d %H:%M:%S UTC"),
                "hashes": " · ".join(
                    h[:8] for h in (info.version.major, info.version.minor, info.version.patch)
                ),
            }
            for info in store.get_version_numbers(name)
        ]
        ops.append({"name": name, "versions": versions[::-1]})
    return {"ops": ops, "pipelines": sorted(store.list_pipelines().items())}
