"""One translation of database driver errors into flowplex's error tree.

``sqlite3``, psycopg and SQLAlchemy errors all end up here (from the runtime backends' raw
connections and from SQLAlchemy engines alike): a unique violation becomes
:class:`~flowplex.errors.DuplicateKeyError`, anything else a
:class:`~flowplex.errors.BackendError` (or the subclass a caller asks for) whose message says
in one line where and why: read-only database, disk full, server unreachable, ...
The driver error stays attached as ``__cause__`` (callers ``raise ... from exc``).

The drivers are never imported here: an error can only come from a driver already loaded.
"""

from __future__ import annotations

import sys

from ..errors import BackendError, DuplicateKeyError, StorageUnwritableError

__all__ = ["is_driver_error", "is_retryable", "translate_error"]

# SQLite primary result codes (extended codes are named after them: SQLITE_READONLY_DBMOVED).
_SQLITE_REASONS = {
    "SQLITE_READONLY": "the database is read-only (check the file's and its directory's "
    "permissions)",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_CANTOPEN": "cannot open the database file",
    "SQLITE_BUSY": "the database stayed locked by another connection past the busy timeout",
    "SQLITE_LOCKED": "the database stayed locked by another connection past the busy timeout",
    "SQLITE_CORRUPT": "the database file is corrupt",
    "SQLITE_NOTADB": "the file is not a SQLite database",
    "SQLITE_IOERR_WRITE": "writing the database file failed (a full disk, or a file size limit)",
    "SQLITE_IOERR": "disk I/O error",
    "SQLITE_PERM": "permission denied",
}
# A failed write() (a file over its size limit, a dying disk) is no lock to wait out either.
_SQLITE_UNWRITABLE = ("SQLITE_READONLY", "SQLITE_FULL", "SQLITE_PERM", "SQLITE_IOERR_WRITE")
_SQLITE_DUPLICATE = frozenset({"SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"})

# PostgreSQL SQLSTATEs, then SQLSTATE classes (the first two characters).
_PG_REASONS = {
    "25006": "the database is read-only (a standby, or default_transaction_read_only)",
    "53100": "the server's disk is full",
    "53200": "the server is out of memory",
    "53300": "the server has no free connection slots",
    "57P01": "the server is shutting down",
    "57P02": "the server is shutting down",
    "57P03": "the server is not accepting connections yet",
    "3D000": "the database does not exist",
    "28P01": "authentication failed",
    "28000": "authentication failed",
    "40001": "a concurrent transaction conflicted (serialization failure)",
    "40P01": "a concurrent transaction conflicted (deadlock)",
}
_PG_CLASS_REASONS = {"08": "cannot reach the server", "53": "the server ran out of resources"}
_PG_DUPLICATE = "23505"
_PG_UNWRITABLE = frozenset({"25006", "53100"})
_PG_RETRYABLE = frozenset({"40001", "40P01"})


def is_driver_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a database failure to translate: a driver error, or SQLAlchemy's
    wrapping of one (not SQLAlchemy's errors about a statement or a value it cannot encode)."""
    return _driver_exception(exc) is not None or _is_sqlalchemy_error(exc)


def is_retryable(exc: BaseException) -> bool:
    """Whether the driver error behind ``exc`` (or ``exc`` itself) is a transaction that lost a
    race and may simply be run again: a unique violation, a deadlock, a serialization failure."""
    if isinstance(exc, DuplicateKeyError):
        return True
    cause = exc if _driver_exception(exc) is not None else exc.__cause__
    driver = None if cause is None else _driver_exception(cause)
    if driver is None:
        return False
    return getattr(driver, "sqlstate", None) in _PG_RETRYABLE or _is_duplicate(driver)


def translate_error(
    exc: BaseException, where: str, error: type[BackendError] = BackendError
) -> BackendError:
    """The flowplex error for the driver (or SQLAlchemy) error ``exc``.

    ``where`` names the database for the message (``"the database at sqlite:///x.db"``:
    redacted, never with a password). A unique violation is a :class:`DuplicateKeyError`;
    anything else an ``error`` (:class:`BackendError` by default).
    """
    driver = _driver_exception(exc)
    if driver is None:
        first = _first_line(exc) or type(exc).__name__
        return error(f"{where} failed: {first}")
    detail = _first_line(driver) or type(driver).__name__
    if _is_duplicate(driver):
        return DuplicateKeyError(f"{where}: a row with that key exists already ({detail})")
    reason = _reason(driver)
    if reason is None:
        return error(f"{where} failed: {detail}")
    if error is BackendError and _is_unwritable(driver):
        error = StorageUnwritableError
    return error(f"{where} failed: {reason} ({detail})")


def _is_unwritable(driver: BaseException) -> bool:
    """Whether retrying cannot help: a read-only database, a full disk."""
    name: str = getattr(driver, "sqlite_errorname", "") or ""
    if name:
        return any(name == p or name.startswith(p + "_") for p in _SQLITE_UNWRITABLE)
    return getattr(driver, "sqlstate", None) in _PG_UNWRITABLE


# -- the drivers' errors -------------------------------------------------------------------------


def _driver_exception(exc: BaseException) -> BaseException | None:
    """The sqlite3 or psycopg exception ``exc`` is or wraps (SQLAlchemy's ``.orig``)."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.DBAPIError):
        orig = exc.orig
        return orig if orig is not None and _is_driver(orig) else None
    return exc if _is_driver(exc) else None


def _is_driver(exc: BaseException) -> bool:
    sqlite3 = sys.modules.get("sqlite3")
    if sqlite3 is not None and isinstance(exc, sqlite3.Error):
        return True
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, psycopg.Error)


def _is_sqlalchemy_error(exc: BaseException) -> bool:
    """SQLAlchemy's own errors about reaching the database (a pool that ran dry, a connection
    lost), not its errors about the caller's statements or values."""
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is None:
        return False
    kinds = (
        sqlalchemy_exc.DBAPIError,
        sqlalchemy_exc.TimeoutError,
        sqlalchemy_exc.DisconnectionError,
    )
    return isinstance(exc, kinds)


def _is_duplicate(driver: BaseException) -> bool:
    if getattr(driver, "sqlstate", None) == _PG_DUPLICATE:
        return True
    name = getattr(driver, "sqlite_errorname", "")
    return name in _SQLITE_DUPLICATE


def _reason(driver: BaseException) -> str | None:
    """A plain statement of what went wrong, where the error's code says more than its text."""
    name: str = getattr(driver, "sqlite_errorname", "") or ""
    if name:
        for prefix, reason in _SQLITE_REASONS.items():
            if name == prefix or name.startswith(prefix + "_"):
                return reason
        return None
    sqlstate: str | None = getattr(driver, "sqlstate", None)
    if sqlstate is None:
        # psycopg gives no SQLSTATE to failures to connect or to keep the connection.
        psycopg = sys.modules.get("psycopg")
        if psycopg is not None and isinstance(driver, psycopg.OperationalError):
            return "cannot reach the server"
        return None
    return _PG_REASONS.get(sqlstate) or _PG_CLASS_REASONS.get(sqlstate[:2])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else ""
