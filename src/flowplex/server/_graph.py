"""A task graph drawn as SVG on the server: tasks in columns by depth, arrows from precursors.

No script and no library: the page shows the picture as sent, offline. Each task is a box
(key, type, status colour) linked to its row in the task table below the picture.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

__all__ = ["draw_graph"]

BOX_W, BOX_H = 168, 46
GAP_X, GAP_Y = 56, 18
PAD = 12
ROOT = "ROOT"

_COLOURS = {
    "COMPLETED": ("#dcfce7", "#15803d"),
    "FAILED": ("#fee2e2", "#b91c1c"),
    "RUNNING": ("#fef9c3", "#a16207"),
    "PENDING": ("#f3f4f6", "#6b7280"),
}


def _depths(tasks: Mapping[str, Any], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Each task's column: the longest path from ROOT to it (ROOT itself is not drawn)."""
    incoming: dict[str, list[str]] = {key: [] for key in tasks}
    for src, dest in edges:
        incoming.setdefault(dest, []).append(src)
    depth: dict[str, int] = {}

    def of(key: str, seen: frozenset[str]) -> int:
        if key in depth:
            return depth[key]
        parents = [p for p in incoming.get(key, ()) if p != ROOT and p not in seen]
        value = 0 if not parents else 1 + max(of(p, seen | {key}) for p in parents)
        depth[key] = value
        return value

    for key in tasks:
        if key != ROOT:
            of(key, frozenset())
    return depth


def _label(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def draw_graph(tasks: Mapping[str, Mapping[str, Any]], edges: Sequence[tuple[str, str]]) -> str:
    """An ``<svg>`` element picturing ``tasks`` (key → task dict, ROOT included) and ``edges``
    (``(src, dest)`` pairs), every text escaped; empty for a flow without tasks."""
    depth = _depths(tasks, edges)
    if not depth:
        return ""
    columns: dict[int, list[str]] = {}
    for key in tasks:  # in the order the tasks were added, so the picture is stable
        if key in depth:
            columns.setdefault(depth[key], []).append(key)
    where: dict[str, tuple[int, int]] = {}
    for col, keys in columns.items():
        for row, key in enumerate(keys):
            where[key] = (PAD + col * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + len(columns) * BOX_W + (len(columns) - 1) * GAP_X
    height = PAD * 2 + max(len(k) for k in columns.values()) * (BOX_H + GAP_Y) - GAP_Y
    parts = [
        f'<svg class="graph" role="img" aria-label="task graph" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'fill="#9ca3af"/></marker></defs>',
    ]
    for src, dest in edges:
        if src not in where or dest not in where:
            continue
        (x1, y1), (x2, y2) = where[src], where[dest]
        sx, sy, ex, ey = x1 + BOX_W, y1 + BOX_H / 2, x2 - 2, y2 + BOX_H / 2
        bend = max(20.0, (ex - sx) / 2)
        parts.append(
            f'<path class="edge" d="M{sx},{sy} C{sx + bend},{sy} {ex - bend},{ey} {ex},{ey}" '
            'fill="none" stroke="#9ca3af" stroke-width="1.5" marker-end="url(#arrow)"/>'
        )
    for key, (x, y) in where.items():
        task = tasks[key]
        status = str(task.get("status", "PENDING"))
        fill, stroke = _COLOURS.get(status, _COLOURS["PENDING"])
        kind = str(task.get("task_type", ""))
        parts.append(
            f'<a href="#task-{escape(key)}"><g class="task" data-status="{escape(status)}">'
            f"<title>{escape(key)}: {escape(kind)}, {escape(status)}</title>"
            f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="8" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="1.5"/>'
            f'<text x="{x + 10}" y="{y + 19}" font-size="13" font-weight="600" '
            f'fill="#111827">{escape(_label(key))}</text>'
            f'<text x="{x + 10}" y="{y + 36}" font-size="11.5" fill="{stroke}">'
            f"{escape(_label(kind, 12))} · {escape(status.lower())}</text></g></a>"
        )
    parts.append("</svg>")
    return "".join(parts)
