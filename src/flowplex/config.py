"""Settings, YAML loading, deep merge and dotted class-path resolution.

Settings come from ``FLOWPLEX_*`` environment variables, read in one place
(:meth:`Settings.from_env`):

``FLOWPLEX_HOME``
    The directory that holds a node's files. Default: ``./.flowplex``.
``FLOWPLEX_DB``
    The database URL of the default node. Default: a SQLite file in ``FLOWPLEX_HOME``
    (``sqlite:///<home>/flowplex.db``). ``memory://`` and ``postgresql://...`` are the others.
``FLOWPLEX_LOG_LEVEL``
    The level of flowplex's loggers. Default: ``WARNING``.
"""

from __future__ import annotations

import copy
import importlib
import json
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ClassPathError, ConfigurationError, FlowStateError

__all__ = [
    "Settings",
    "deep_merge",
    "ensure_json_serializable",
    "load_yaml",
    "require_keys",
    "resolve_class_path",
]

_ENV_PREFIX = "FLOWPLEX_"
_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """flowplex's settings, resolved from the environment.

    Build it with :meth:`from_env`; the fields are plain values so a settings object can be
    compared, printed and passed to another process.
    """

    home: Path
    db_url: str
    log_level: str = "WARNING"

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        home: str | os.PathLike[str] | None = None,
        db: str | None = None,
        log_level: str | None = None,
    ) -> Settings:
        """Read ``FLOWPLEX_HOME``, ``FLOWPLEX_DB`` and ``FLOWPLEX_LOG_LEVEL`` (see the module).

        A keyword argument that is not None beats its variable (the command line passes its
        ``--home``, ``--db`` and ``--log-level`` here): ``db`` beats ``FLOWPLEX_DB``, which beats
        the SQLite file in the home; ``home`` beats ``FLOWPLEX_HOME``, which beats
        ``./.flowplex``.
        """
        env = os.environ if environ is None else environ
        if home is not None and not str(home).strip():
            raise ConfigurationError("the home directory must not be empty.")
        if db is not None and "://" not in db:
            raise ConfigurationError(
                f"a database URL looks like memory://, sqlite:///path.db or postgresql://...; "
                f"got {db!r}."
            )
        home_path = Path(home).expanduser() if home is not None else None
        if home_path is None:
            home_path = Path(env.get(f"{_ENV_PREFIX}HOME") or ".flowplex")
        db_url = db or env.get(f"{_ENV_PREFIX}DB") or f"sqlite:///{home_path / 'flowplex.db'}"
        raw_level = log_level if log_level is not None else env.get(f"{_ENV_PREFIX}LOG_LEVEL")
        level = (raw_level or "WARNING").upper()
        if level not in _LOG_LEVELS:
            source = "the log level" if log_level is not None else "FLOWPLEX_LOG_LEVEL"
            raise ConfigurationError(
                f"{source} must be one of {', '.join(_LOG_LEVELS)}; got {level!r}."
            )
        return cls(home=home_path, db_url=db_url, log_level=level)


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a YAML file whose top level is a mapping.

    Raises :class:`ConfigurationError` naming the file when it is missing, unreadable, not valid
    YAML or not a mapping. An empty file gives ``{}``.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"YAML file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read YAML file {p}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"invalid YAML in {p}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigurationError(
            f"YAML file {p} must hold a mapping at the top level, not {type(data).__name__}."
        )
    return data


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Return a new dict: ``base`` with ``override`` merged in, recursively.

    Nested mappings merge key by key; any other value in ``override`` (lists included) replaces
    the one in ``base``. Neither argument is modified, and the result shares no mutable values
    with them.
    """
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = deep_merge(current, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve_class_path(path: str) -> Any:
    """Import the object a dotted path names.

    ``"pkg.module.Class"`` imports ``pkg.module`` and takes ``Class``; ``"Module.Class"`` finds
    ``Module`` anywhere on ``sys.path`` (as flow modules are laid out). The longest importable
    module prefix wins, so ``"pkg.module.Outer.Inner"`` works too.

    Raises :class:`ClassPathError` naming the missing module or attribute.
    """
    if not isinstance(path, str) or not path.strip():
        raise ClassPathError(f"a class path must be a non-empty string, got {path!r}.")
    parts = path.strip().split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        raise ClassPathError(
            f"invalid class path {path!r}: expected dotted names like 'module.Class' "
            f"or 'package.module.Class'."
        )
    module = None
    attrs: list[str] = []
    longest_missing: str | None = None
    for split in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:split])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # A module that exists but fails on one of *its* imports must not be reported as
            # missing itself.
            missing = exc.name or ""
            if module_name != missing and not module_name.startswith(missing + "."):
                raise ClassPathError(
                    f"module {module_name!r} (for class path {path!r}) failed to import: {exc}"
                ) from exc
            longest_missing = longest_missing or module_name
            continue
        except Exception as exc:
            raise ClassPathError(
                f"module {module_name!r} (for class path {path!r}) failed to import: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        attrs = parts[split:]
        break
    if module is None:
        raise ClassPathError(f"module {parts[0]!r} not found (class path {path!r}).")
    obj: Any = module
    for i, attr in enumerate(attrs):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            if i == 0 and longest_missing is not None:
                raise ClassPathError(
                    f"module {longest_missing!r} not found, and module {module.__name__!r} has "
                    f"no attribute {attr!r} (class path {path!r})."
                ) from None
            owner = ".".join(parts[: len(parts) - len(attrs) + i])
            raise ClassPathError(
                f"class {attr!r} not found in module {owner!r} (class path {path!r})."
            ) from None
    return obj


def require_keys(config: Mapping[str, Any], keys: Iterable[str], where: str) -> None:
    """Raise :class:`ConfigurationError` naming each key of ``keys`` missing from ``config``."""
    missing = [k for k in keys if k not in config or config[k] is None]
    if missing:
        names = ", ".join(repr(k) for k in missing)
        raise ConfigurationError(f"{where} is missing required config key(s): {names}.")


def ensure_json_serializable(value: Any, what: str) -> None:
    """Raise :class:`FlowStateError` when ``value`` cannot round-trip through JSON.

    The message names the first offending path (``flow_state['history'][2]``) and its type, so
    the author can see which value to convert.
    """
    problem = _first_non_json(value, what)
    if problem is not None:
        path, bad = problem
        kind = repr(bad) if isinstance(bad, float) else f"a {type(bad).__name__}"
        raise FlowStateError(
            f"{path} is not JSON-serializable ({kind}); flowplex stores state and messages as "
            f"JSON: convert it to str, int, finite float, bool, None, list or dict."
        )
    try:
        json.dumps(value, allow_nan=False)
    except ValueError as exc:
        raise FlowStateError(f"{what} is not valid JSON: {exc}") from exc


def _first_non_json(value: Any, path: str) -> tuple[str, Any] | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else (path, value)
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            found = _first_non_json(item, f"{path}[{i}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"{path} key {key!r}", key
            found = _first_non_json(item, f"{path}[{key!r}]")
            if found:
                return found
        return None
    return path, value
