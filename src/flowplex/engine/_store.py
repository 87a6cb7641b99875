"""``FlowStore``: task flows in SQL (SQLAlchemy), with claims so runners can share a database.

Rows live in ``engine_flows`` on flowplex's one metadata (:mod:`flowplex.db.schema`, migration
0002). The hot path (create, get, claim, save) runs single Core statements, each its own short
transaction; the ORM model :class:`FlowRecord` and :attr:`FlowStore.session` are there for
ad-hoc queries.

A claim is a compare-and-set on the row: ``claimed_by`` gets a fresh token and
``lease_until`` a deadline, only where the lease has run out. A runner that dies holding a
claim loses it when the lease expires; its late saves are refused (:class:`LeaseLostError`),
so two runners never tick one flow at the same time.
"""

from __future__ import annotations

import functools
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Executable,
    Integer,
    and_,
    bindparam,
    false,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session

from .._clock import SYSTEM_CLOCK, Clock
from ..db import DatabaseURL, create_engine, ensure_schema, transaction
from ..db.schema import engine_flows, metadata
from ..errors import DuplicateKeyError
from ._errors import EngineError, FlowExistsError, FlowNotFoundError, LeaseLostError
from ._graph import COMPLETED, FAILED, PENDING, RUNNING, TaskFlow

__all__ = ["Claim", "FlowRecord", "FlowStore", "new_flow_key"]

_T = engine_flows
_COLUMNS = (
    _T.c.key,
    _T.c.label,
    _T.c.status,
    _T.c.parent_key,
    _T.c.depth,
    _T.c.cfg,
    _T.c.data,
    _T.c.graph,
)
_UNFINISHED = (PENDING.value, RUNNING.value)


def new_flow_key() -> str:
    """A fresh flow key: ``"flow:"`` and a uuid4 (41 characters)."""
    return f"flow:{uuid.uuid4()}"


class _Base(DeclarativeBase):
    metadata = metadata


class FlowRecord(_Base):
    """The ORM model of a stored flow (``store.model``), for ad-hoc queries and inserts.

    Built from a flow dict:
    ``FlowRecord(**flow.to_flow_dict())`` gets a ``flow:<uuid>`` key and timestamps by default.
    """

    __table__ = engine_flows

    key: Mapped[str]
    label: Mapped[str | None]
    status: Mapped[str]
    parent_key: Mapped[str | None]
    depth: Mapped[int]
    cfg: Mapped[dict[str, Any]]
    data: Mapped[dict[str, Any]]
    graph: Mapped[dict[str, Any]]
    num_tickable_tasks: Mapped[int]
    claimed_by: Mapped[str | None]
    lease_until: Mapped[float]
    created_at: Mapped[float]
    modified_at: Mapped[float]

    def __init__(self, **kwargs: Any) -> None:
        now = time.time()
        defaults: dict[str, Any] = {
            "key": new_flow_key(),
            "status": PENDING.value,
            "depth": 0,
            "cfg": {"fail_fast": True},
            "data": {},
            "graph": {"edges": [], "tasks": {}},
            "num_tickable_tasks": 0,
            "lease_until": 0.0,
            "created_at": now,
            "modified_at": now,
        }
        for name, value in defaults.items():
            if kwargs.get(name) is None:
                kwargs[name] = value
        super().__init__(**kwargs)

    def to_flow(self) -> TaskFlow:
        """The :class:`TaskFlow` this row holds (a copy)."""
        return TaskFlow.from_flow_dict({c.name: getattr(self, c.name) for c in _COLUMNS})

    def __repr__(self) -> str:
        return f"<FlowRecord {self.key} {self.label!r} {self.status}>"


@dataclass
class Claim:
    """A runner's hold on one flow: the flow as loaded, the claim token, the lease deadline."""

    flow: TaskFlow
    token: str
    lease_until: float

    @property
    def key(self) -> str:
        """The claimed flow's key."""
        assert self.flow.key is not None
        return self.flow.key


#: Fields a query filter may name.
FILTER_FIELDS = frozenset(
    {
        "key",
        "label",
        "status",
        "parent_key",
        "depth",
        "num_tickable_tasks",
        "claimed_by",
        "lease_until",
        "created_at",
        "modified_at",
    }
)
_OPS = frozenset({"=", "<", ">", "<=", ">=", "IN", "CONTAINS", "IS NULL", "BETWEEN"})
_CONJUNCTIONS = {"AND": and_, "OR": or_}
_FILTER_KEYS = frozenset({"field", "op", "arg"})
_STATUSES = frozenset(s.value for s in (PENDING, RUNNING, COMPLETED, FAILED))
# What each filterable column compares with (a value of another type is a client mistake that
# PostgreSQL would only report as an operator error).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(("key", "label", "status", "parent_key", "claimed_by"), (str,)),
    **dict.fromkeys(("depth", "num_tickable_tasks"), (int,)),
    **dict.fromkeys(("lease_until", "created_at", "modified_at"), (int, float)),
}


class FlowStore:
    """Task flows in a SQL database: ``sqlite://`` (in memory, as are ``memory://`` and
    ``sqlite:///:memory:``), ``sqlite:///path.db`` or ``postgresql://...``.

    Call :meth:`ensure_tables` once (it migrates a file or PostgreSQL database to flowplex's
    current schema, or creates the table in memory). Keys are ``flow:<uuid4>`` unless the flow
    already has one. Claims and timestamps read ``clock`` (the system clock by default).
    Methods raise :class:`~flowplex.BackendError` when the database fails.
    """

    def __init__(self, db_url: str, *, clock: Clock | None = None) -> None:
        self._db = DatabaseURL.parse(db_url)
        self.url = db_url
        self.clock = clock or SYSTEM_CLOCK
        self._session: Session | None = None
        self.engine: Engine = create_engine(self._db, name="the flow store")
        self._postgres = self.engine.dialect.name == "postgresql"

    #: The ORM model of a stored flow.
    model = FlowRecord

    @property
    def session(self) -> Session:
        """A SQLAlchemy session on this store's database, for ad-hoc ORM queries."""
        if self._session is None:
            self._session = Session(self.engine)
        return self._session

    def ensure_tables(self) -> None:
        """Create or migrate the tables (idempotent; safe from several processes)."""
        if self._db.volatile:
            with self._begin() as conn:
                metadata.create_all(conn, tables=[engine_flows])
        else:
            ensure_schema(self._db)

    # -- flows ------------------------------------------------------------------------------

    def create_flow(self, flow: TaskFlow) -> str:
        """Store a new flow; give it a ``flow:<uuid>`` key if it has none; return the key.

        Raises :class:`FlowExistsError` if a flow with that key is stored already.
        """
        _check_flow(flow)
        key = flow.key or new_flow_key()
        now = self.clock.time()
        values = {
            **_row_values(flow),
            "key": key,
            "claimed_by": None,
            "lease_until": 0.0,
            "created_at": now,
            "modified_at": now,
        }
        try:
            with self._begin() as conn:
                conn.execute(_INSERT, values)
        except DuplicateKeyError:
            raise FlowExistsError(f"a flow with key {key!r} is stored already.") from None
        flow.key = key
        return key

    def get_flow(self, key: str) -> TaskFlow:
        """The stored flow ``key``; raises :class:`FlowNotFoundError`."""
        with self._begin(write=False) as conn:
            row = conn.execute(_GET, {"b_key": key}).first()
        if row is None:
            raise FlowNotFoundError(f"no flow with key {key!r}.")
        return _flow_from_row(row)

    def save_flow(self, flow: TaskFlow, claim: Claim | None = None, release: bool = False) -> None:
        """Write ``flow`` (found by its key) back.

        With ``claim``, the write happens only if that claim still holds (else
        :class:`LeaseLostError`), and ``release`` ends the claim in the same statement.
        Raises :class:`FlowNotFoundError` if no flow has the key.
        """
        _check_flow(flow)
        if flow.key is None:
            raise FlowNotFoundError("this flow has no key: store it with create_flow first.")
        params = {**_row_values(flow), "modified_at": self.clock.time(), "b_key": flow.key}
        if claim is not None:
            params["b_token"] = claim.token
        stmt = _save_statement(claim is not None, claim is not None and release)
        with self._begin() as conn:
            count = conn.execute(stmt, params).rowcount
        if count == 0:
            self._missing(flow.key, claim)

    def query_flows(
        self,
        filters: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        *,
        status: str | Sequence[str] | None = None,
        label: str | None = None,
        parent_key: str | None = None,
        created_after: float | datetime | None = None,
        created_before: float | datetime | None = None,
        modified_after: float | datetime | None = None,
        modified_before: float | datetime | None = None,
        order_by: str = "created_at",
        descending: bool = False,
        limit: int | None = None,
    ) -> list[TaskFlow]:
        """Stored flows matching every given condition, ordered by ``order_by``.

        The keyword arguments cover the common cases (``status`` takes one status or a list;
        times are epoch seconds or datetimes; ``after`` is inclusive, ``before`` exclusive).
        ``filters`` adds conditions: ``{"field", "op", "arg"}`` with op one of
        ``= < > <= >= IN CONTAINS "IS NULL" BETWEEN`` (default ``=``), negated by a leading
        ``!`` (``"!="``, ``"!IN"``, ``"! IN"``, ``"!IS NULL"``). Groups nest:
        ``{"conjunction": "AND" | "OR", "filters": [...]}``, or ``{"and": [...]}``,
        ``{"or": [...]}`` and ``{"not": ...}``; a list of conditions means all of them.
        """
        conditions: list[ColumnElement[bool]] = []
        if filters is not None:
            conditions.append(_condition(filters))
        if status is not None:
            statuses = [status] if isinstance(status, str) else status
            if not isinstance(statuses, Sequence) or not all(
                isinstance(s, str) and s in _STATUSES for s in statuses
            ):
                raise EngineError(
                    f"status must be one or a list of {sorted(_STATUSES)}, got {status!r}."
                )
            conditions.append(_T.c.status.in_(list(statuses)))
        for name, column, value in (
            ("label", _T.c.label, label),
            ("parent_key", _T.c.parent_key, parent_key),
        ):
            if value is not None:
                if not isinstance(value, str):
                    raise EngineError(f"{name} must be a string, got {value!r}.")
                conditions.append(column == value)
        for column, bound, after in (
            (_T.c.created_at, created_after, True),
            (_T.c.created_at, created_before, False),
            (_T.c.modified_at, modified_after, True),
            (_T.c.modified_at, modified_before, False),
        ):
            if bound is not None:
                t = _epoch(bound)
                conditions.append(column >= t if after else column < t)
        if order_by not in FILTER_FIELDS:
            raise EngineError(f"cannot order by {order_by!r}: use one of {sorted(FILTER_FIELDS)}.")
        if limit is not None and (
            isinstance(limit, bool) or not isinstance(limit, int) or limit < 0
        ):
            raise EngineError(f"limit must be a non-negative integer, got {limit!r}.")
        order = _T.c[order_by].desc() if descending else _T.c[order_by].asc()
        stmt = select(*_COLUMNS).where(*conditions).order_by(order, _T.c.key).limit(limit)
        with self._begin(write=False) as conn:
            rows = conn.execute(stmt).all()
        return [_flow_from_row(row) for row in rows]

    # -- claims -----------------------------------------------------------------------------

    def claim_flows(self, limit: int = 1, lease: float = 30.0) -> list[Claim]:
        """Claim up to ``limit`` unfinished flows whose lease has run out (least recently
        saved first) for ``lease`` seconds. Flows another runner holds are skipped."""
        _check_lease(lease)
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise EngineError(f"limit must be a positive integer, got {limit!r}.")
        stmt = _claim_many_statement(self._postgres)
        return self._claim(stmt, {"b_limit": limit}, lease)

    def claim_flow(self, key: str, lease: float = 30.0) -> Claim | None:
        """Claim the flow ``key`` if it is unfinished and unclaimed (else None)."""
        _check_lease(lease)
        return next(iter(self._claim(_CLAIM_ONE, {"b_key": key}, lease)), None)

    def _claim(self, stmt: Executable, params: dict[str, Any], lease: float) -> list[Claim]:
        token = uuid.uuid4().hex
        now = self.clock.time()
        until = now + lease
        params.update(b_now=now, b_token=token, b_until=until)
        with self._begin() as conn:
            rows = conn.execute(stmt, params).all()
        return [Claim(_flow_from_row(row), token, until) for row in rows]

    def renew_claim(self, claim: Claim, lease: float = 30.0) -> None:
        """Extend ``claim`` to ``lease`` seconds from now; :class:`LeaseLostError` if it was
        taken over."""
        _check_lease(lease)
        until = self.clock.time() + lease
        params = {"b_key": claim.key, "b_token": claim.token, "b_until": until}
        with self._begin() as conn:
            renewed = conn.execute(_RENEW, params).rowcount > 0
        if not renewed:
            self._missing(claim.key, claim)
        claim.lease_until = until

    def release_claim(self, claim: Claim) -> None:
        """End ``claim`` without saving (a no-op if it was taken over meanwhile)."""
        with self._begin() as conn:
            conn.execute(_RELEASE, {"b_key": claim.key, "b_token": claim.token})

    def _missing(self, key: str, claim: Claim | None) -> None:
        if claim is not None:
            with self._begin(write=False) as conn:
                found = conn.execute(_GET, {"b_key": key}).first()
            if found is not None:
                raise LeaseLostError(
                    f"the claim on flow {key!r} expired and another runner took it over; "
                    f"this runner's changes were not saved."
                )
        raise FlowNotFoundError(f"no flow with key {key!r}.")

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close the session and the connection pool."""
        if self._session is not None:
            self._session.close()
            self._session = None
        self.engine.dispose()

    def __enter__(self) -> FlowStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FlowStore {self._db}>"

    @contextmanager
    def _begin(self, write: bool = True) -> Iterator[Connection]:
        """One transaction (:func:`flowplex.db.transaction`: driver errors become
        BackendError); a value the database cannot take becomes EngineError."""
        try:
            with transaction(self.engine, write=write) as conn:
                yield conn
        except StatementError as exc:
            # Raised before the database is reached: a value SQLAlchemy cannot encode.
            raise EngineError(f"cannot store the flow: {exc.orig}") from exc
        except (TypeError, ValueError) as exc:
            # The same, from psycopg's JSON adapter.
            raise EngineError(f"cannot store the flow: {exc}") from exc


# -- statements --------------------------------------------------------------------------------
# Built once with bound parameters: SQLAlchemy then reuses their compiled form, which halves the
# cost of a persisted tick compared with building a statement per call.

_KEY = _T.c.key == bindparam("b_key")
_HELD = _T.c.claimed_by == bindparam("b_token")
_CLAIMABLE = and_(_T.c.status.in_(_UNFINISHED), _T.c.lease_until <= bindparam("b_now"))
_CLAIMED: dict[str, Any] = {"claimed_by": bindparam("b_token"), "lease_until": bindparam("b_until")}

_INSERT = _T.insert()
_GET = select(*_COLUMNS).where(_KEY)
_CLAIM_ONE = update(_T).where(_KEY, _CLAIMABLE).values(_CLAIMED).returning(*_COLUMNS)
_RENEW = update(_T).where(_KEY, _HELD).values(lease_until=bindparam("b_until"))
_RELEASE = update(_T).where(_KEY, _HELD).values(claimed_by=None, lease_until=0.0)


@functools.cache
def _save_statement(held: bool, release: bool) -> Executable:
    stmt = update(_T).where(_KEY, _HELD) if held else update(_T).where(_KEY)
    return stmt.values(claimed_by=None, lease_until=0.0) if release else stmt


@functools.cache
def _claim_many_statement(postgres: bool) -> Executable:
    candidates = (
        select(_T.c.key)
        .where(_CLAIMABLE)
        .order_by(_T.c.modified_at)
        .limit(bindparam("b_limit", type_=Integer))
    )
    if postgres:
        # Skip rows other claimers hold, and pick the candidates exactly once (a plain
        # IN (subquery ... LIMIT) may be re-run per row and claim more than ``limit``).
        picked = (
            candidates.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        )
        which = _T.c.key.in_(select(picked.c.key))
    else:
        # SQLite runs one writer at a time: the subquery and the update see the same rows.
        which = _T.c.key.in_(candidates.scalar_subquery())
    # The lease test is repeated outside the subquery: PostgreSQL re-checks it on the row
    # version it updates, so a flow claimed meanwhile is not taken twice.
    return update(_T).where(which, _CLAIMABLE).values(_CLAIMED).returning(*_COLUMNS)


def _check_flow(flow: Any) -> None:
    if not isinstance(flow, TaskFlow):
        raise EngineError(f"expected a TaskFlow, got {type(flow).__name__}.")


def _check_lease(lease: Any) -> None:
    if isinstance(lease, bool) or not isinstance(lease, int | float) or lease <= 0:
        raise EngineError(f"lease must be a positive number of seconds, got {lease!r}.")


def _row_values(flow: TaskFlow) -> dict[str, Any]:
    d = flow._dump()
    return {
        "label": d["label"],
        "status": str(d["status"]),
        "parent_key": d["parent_key"],
        "depth": d["depth"],
        "cfg": d["cfg"],
        "data": d["data"],
        "graph": d["graph"],
        "num_tickable_tasks": d["num_tickable_tasks"],
    }


def _flow_from_row(row: Any) -> TaskFlow:
    # The JSON columns decode to fresh objects: the flow can own them without a copy.
    key, label, status, parent_key, depth, cfg, data, graph = row
    return TaskFlow._load(
        {
            "key": key,
            "label": label,
            "status": status,
            "parent_key": parent_key,
            "depth": depth,
            "cfg": cfg,
            "data": data,
            "graph": graph,
        }
    )


def _epoch(value: Any) -> float:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise EngineError(f"a time bound is epoch seconds or a datetime, got {value!r}.")
    return float(value)


def _condition(spec: Any) -> ColumnElement[bool]:
    """A SQL condition from a query filter (see ``query_flows``)."""
    if isinstance(spec, Sequence) and not isinstance(spec, str):
        return and_(true(), *(_condition(s) for s in spec))
    if not isinstance(spec, Mapping):
        raise EngineError(f"a query filter is a mapping or a list of them, got {spec!r}.")
    if "conjunction" in spec:
        return _group(spec)
    if "and" in spec or "or" in spec:
        group = spec.get("and", spec.get("or"))
        if len(spec) != 1 or not isinstance(group, list):
            raise EngineError(f"a filter group is {{'and': [...]}} or {{'or': [...]}}: {spec!r}.")
        parts = [_condition(s) for s in group]
        return and_(true(), *parts) if "and" in spec else or_(false(), *parts)
    if "not" in spec:
        if len(spec) != 1:
            raise EngineError(f"a negated filter is {{'not': filter}} alone: {spec!r}.")
        return not_(_condition(spec["not"]))
    return _single_filter(spec)


def _single_filter(spec: Mapping[str, Any]) -> ColumnElement[bool]:
    """``{"field", "op", "arg"}`` as a SQL condition."""
    unknown = sorted(str(k) for k in spec if k not in _FILTER_KEYS)
    if unknown:
        raise EngineError(
            f"unknown filter key(s) {unknown}: a filter is {{'field', 'op', 'arg'}}, or a group "
            f"{{'conjunction': 'AND' or 'OR', 'filters': [...]}}."
        )
    field, op = spec.get("field"), spec.get("op", "=")
    if field not in FILTER_FIELDS:
        raise EngineError(f"cannot filter on {field!r}: use one of {sorted(FILTER_FIELDS)}.")
    if not isinstance(op, str):
        raise EngineError(f"a filter op must be a string, got {op!r}.")
    # A leading "!" negates, spaces after it allowed: "!=" is NOT "=", "! IN" is NOT "IN".
    negate = op.startswith("!")
    op = op.lstrip("! ") if negate else op
    if op.upper() in {"IN", "CONTAINS", "IS NULL", "BETWEEN"}:
        op = op.upper()
    if op not in _OPS:
        raise EngineError(
            f"unknown filter op {spec.get('op')!r}: use one of {sorted(_OPS)}, or one of them "
            f"after '!' to negate it."
        )
    column = _T.c[field]
    arg = spec.get("arg")
    if field in {"created_at", "modified_at", "lease_until"} and op not in {"IN", "IS NULL"}:
        arg = [_epoch(a) for a in arg] if op == "BETWEEN" and isinstance(arg, list) else arg
        if op != "BETWEEN":
            arg = _epoch(arg)
    if op != "IS NULL":
        _check_filter_values(field, op, arg)
    cond = _comparison(column, op, arg)
    return not_(cond) if negate else cond


def _comparison(column: Any, op: str, arg: Any) -> ColumnElement[bool]:
    cond: ColumnElement[bool]
    if op == "IS NULL":
        cond = column.is_(None)
    elif op == "IN":
        if not isinstance(arg, list | tuple):
            raise EngineError(f"op IN needs a list, got {arg!r}.")
        cond = column.in_(list(arg))
    elif op == "BETWEEN":
        if not isinstance(arg, list | tuple) or len(arg) != 2:
            raise EngineError(f"op BETWEEN needs [low, high], got {arg!r}.")
        cond = column.between(arg[0], arg[1])
    elif op == "CONTAINS":
        if not isinstance(arg, str):
            raise EngineError(f"op CONTAINS needs a string, got {arg!r}.")
        cond = column.contains(arg, autoescape=True)
    else:
        cond = {
            "=": column == arg,
            "<": column < arg,
            ">": column > arg,
            "<=": column <= arg,
            ">=": column >= arg,
        }[op]
    return cond


def _group(spec: Mapping[str, Any]) -> ColumnElement[bool]:
    """``{"conjunction": "AND" | "OR", "filters": [...]}``: its filters joined (nesting)."""
    conjunction = spec.get("conjunction")
    filters = spec.get("filters")
    join = _CONJUNCTIONS.get(conjunction.upper()) if isinstance(conjunction, str) else None
    if join is None or not isinstance(filters, list) or set(spec) != {"conjunction", "filters"}:
        raise EngineError(
            f"a filter group is {{'conjunction': 'AND' or 'OR', 'filters': [...]}}, got {spec!r}."
        )
    # The empty AND holds for every flow, the empty OR for none.
    return join(true() if join is and_ else false(), *(_condition(s) for s in filters))


def _check_filter_values(field: str, op: str, arg: Any) -> None:
    """Raise :class:`EngineError` unless ``arg`` (or each item of a list ``arg``) is a value
    of ``field``'s type."""
    values = arg if op in {"IN", "BETWEEN"} and isinstance(arg, list | tuple) else [arg]
    kinds = _FIELD_TYPES[field]
    for value in values:
        if value is None:
            raise EngineError(f"filter on {field!r} got null: use op 'IS NULL' or '!IS NULL'.")
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise EngineError(f"filter on {field!r} compares with {names} values, got {value!r}.")
