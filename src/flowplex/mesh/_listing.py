"""Listing rows: query, sort and paging for ``/flows``, the counts for ``/counts`` (pure).

A row is a dict with the fields of :data:`~flowplex.mesh._query.FIELDS`; ``tags`` is a sorted
list. A flow without an author or description has None there: queries see no value, while
sorting and the listed items use the placeholders "missing author" and "missing description".
Nothing here does I/O, so the HTTP route and the benchmark measure the same code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._query import FIELDS, QueryError, compile_query
from ._records import MISSING_AUTHOR, MISSING_DESCRIPTION

__all__ = [
    "DEFAULT_BY",
    "PLACEHOLDERS",
    "RowSet",
    "SortError",
    "counts",
    "list_rows",
    "parse_by",
    "shown",
]

#: The default sort, as the listing protocol echoes it.
DEFAULT_BY = "name, node, url"

#: The fields the full-text fallback searches.
FULLTEXT_FIELDS = ("organization", "name", "author", "description", "tags")

#: How many sort orders a :class:`RowSet` memoizes (each is a list as long as the rows).
MAX_ORDERS = 32


class SortError(QueryError):
    """A ``by`` that names an unknown field or direction."""


def parse_by(by: str | None) -> list[tuple[str, bool]]:
    """``"author, name:d"`` -> ``[("author", False), ("name", True)]`` (field, descending).

    A direction is any prefix of ``ascending`` or ``descending``; none means ascending. A field
    named again is dropped: its first occurrence already decides every tie it could break.
    """
    text = DEFAULT_BY if by is None or not by.strip() else by
    keys = []
    for part in text.split(","):
        name, _, direction = part.strip().partition(":")
        name, direction = name.strip().lower(), direction.strip().lower()
        if name not in FIELDS:
            raise SortError(f"unknown sort field {name!r} (fields: {', '.join(FIELDS)})")
        if direction and "ascending".startswith(direction):
            keys.append((name, False))
        elif direction and "descending".startswith(direction):
            keys.append((name, True))
        elif not direction:
            keys.append((name, False))
        else:
            raise SortError(f"unknown sort direction {direction!r} for {name} (use asc or desc)")
    first: dict[str, bool] = {}
    for name, desc in keys:
        first.setdefault(name, desc)
    return list(first.items())


def _format_by(keys: Sequence[tuple[str, bool]]) -> str:
    return ", ".join(f"{name}:desc" if desc else name for name, desc in keys)


#: Fields that are never null in a row (their sort key needs no None handling).
_NOT_NULL = frozenset({"registry", "node", "url", "name", "status"})

#: What a row shows for a field with no value.
PLACEHOLDERS = {"author": MISSING_AUTHOR, "description": MISSING_DESCRIPTION}


def shown(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row as it is listed: the placeholders in place of a missing author or description."""
    out = dict(row)
    for name, placeholder in PLACEHOLDERS.items():
        if not out.get(name):
            out[name] = placeholder
    return out


def _column(rows: Sequence[Mapping[str, Any]], name: str) -> list[Any]:
    """Sort keys of one field: case-insensitive text; None after every value; tags joined;
    a missing author or description sorts as its placeholder."""
    if name in _NOT_NULL:
        return [str(r[name]).casefold() for r in rows]
    if name in PLACEHOLDERS:
        placeholder = PLACEHOLDERS[name]
        return [str(r.get(name) or placeholder).casefold() for r in rows]
    if name == "tags":
        return [", ".join(r[name] or ()).casefold() for r in rows]
    return [(True, "") if r.get(name) is None else (False, str(r[name]).casefold()) for r in rows]


class RowSet:
    """Listing rows with memoized sort columns and sort orders.

    Build a new one when the rows change; :meth:`invalidate` drops what depends on a field
    that was updated in place (the ``status`` of liveness).
    """

    __slots__ = ("_columns", "_orders", "rows")

    def __init__(self, rows: Sequence[Mapping[str, Any]]) -> None:
        self.rows = rows
        self._columns: dict[str, list[Any]] = {}
        self._orders: dict[tuple[tuple[str, bool], ...], list[int]] = {}

    def column(self, name: str) -> list[Any]:
        """The sort keys of ``name``, one per row."""
        col = self._columns.get(name)
        if col is None:
            col = self._columns[name] = _column(self.rows, name)
        return col

    def order(self, keys: Sequence[tuple[str, bool]]) -> list[int]:
        """Row indices sorted by ``keys`` (stable: ties keep the rows' order)."""
        memo = tuple(keys)
        order = self._orders.get(memo)
        if order is None:
            order = list(range(len(self.rows)))
            if len({desc for _, desc in keys}) == 1:
                cols = [self.column(name) for name, _ in keys]
                composite = cols[0] if len(cols) == 1 else list(zip(*cols, strict=True))
                order.sort(key=composite.__getitem__, reverse=keys[0][1])
            else:  # mixed directions: stable sorts from the last key to the first
                for name, desc in reversed(keys):
                    order.sort(key=self.column(name).__getitem__, reverse=desc)
            if len(self._orders) >= MAX_ORDERS:  # forget the oldest: `by` comes from clients
                del self._orders[next(iter(self._orders))]
            self._orders[memo] = order
        return order

    def invalidate(self, name: str) -> None:
        """Forget the memos that depend on field ``name``."""
        self._columns.pop(name, None)
        for memo in [m for m in self._orders if any(n == name for n, _ in m)]:
            del self._orders[memo]


def _fulltext(text: str) -> Callable[[Mapping[str, Any]], bool]:
    needle = text.casefold()

    def match(row: Mapping[str, Any]) -> bool:
        for name in FULLTEXT_FIELDS:
            value = row.get(name)
            if value is None:
                continue
            if isinstance(value, list):
                value = ", ".join(value)
            if needle in value.casefold():
                return True
        return False

    return match


def list_rows(
    rows: Sequence[Mapping[str, Any]] | RowSet,
    q: str | None = None,
    by: str | None = None,
    p: int = 0,
    pp: int = 10,
) -> dict[str, Any]:
    """One page of ``rows``: ``{total, filtered, p, pp, items, by, q}``, the registry's reply.

    An invalid ``q`` falls back to a case-insensitive full-text search, and ``q`` then reads
    ``"<error>, fulltext: <q>"``; an invalid ``by`` falls back to the default order, and ``by``
    reads ``"<error>, default: name, node, url"``.
    """
    if p < 0 or pp < 1:
        raise ValueError(f"p must be >= 0 and pp >= 1, got p={p}, pp={pp}.")
    rowset = rows if isinstance(rows, RowSet) else RowSet(rows)
    all_rows = rowset.rows
    q_echo: str | None = q
    try:
        keys = parse_by(by)
        by_echo = _format_by(keys) if by and by.strip() else DEFAULT_BY
    except SortError as exc:
        keys = parse_by(None)
        by_echo = f"{type(exc).__name__}: {exc}, default: {DEFAULT_BY}"
    order = rowset.order(keys)
    if q is not None and q.strip():
        try:
            predicate = compile_query(q)
        except QueryError as exc:
            predicate = _fulltext(q.strip())
            q_echo = f"{type(exc).__name__}: {exc}, fulltext: {q}"
        order = [i for i in order if predicate(all_rows[i])]
    start = p * pp
    return {
        "total": len(all_rows),
        "filtered": len(order),
        "p": p,
        "pp": pp,
        "items": [shown(all_rows[i]) for i in order[start : start + pp]],
        "by": by_echo,
        "q": q_echo,
    }


def counts(rows: Sequence[Mapping[str, Any]] | RowSet) -> dict[str, Any]:
    """``{total, node, organization, tags}``: flows per node, per organization, per tag.

    A flow with no organization counts under ``""``, so the organization counts sum to
    ``total``.
    """
    node: dict[str, int] = {}
    organization: dict[str, int] = {}
    tags: dict[str, int] = {}
    if isinstance(rows, RowSet):
        rows = rows.rows
    for row in rows:
        node[row["node"]] = node.get(row["node"], 0) + 1
        org = row.get("organization") or ""
        organization[org] = organization.get(org, 0) + 1
        for tag in row.get("tags") or ():
            tags[tag] = tags.get(tag, 0) + 1
    return {"total": len(rows), "node": node, "organization": organization, "tags": tags}
