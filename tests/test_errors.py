"""The error hierarchy in flowplex.errors: classes, structured fields, messages and the doc tree."""

from __future__ import annotations

import importlib
import re

import pytest

from flowplex import errors
from flowplex.errors import (
    BackendError,
    ClassPathError,
    ConfigurationError,
    DuplicateKeyError,
    FlowDefinitionError,
    FlowError,
    FlowInstanceError,
    FlowplexError,
    FlowStateError,
    FlowTimeoutError,
    InterfaceError,
    KeyFileError,
    MessagingError,
    PermissionDeniedError,
    SignatureError,
    StorageUnwritableError,
    UnknownInstanceError,
)

ALL_CLASSES = [getattr(errors, name) for name in errors.__all__]


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_every_class_is_a_flowplex_error(cls: type[Exception]) -> None:
    assert issubclass(cls, FlowplexError)
    assert issubclass(cls, Exception)


def test_all_lists_every_error_class_in_the_module() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, FlowplexError)
    }
    assert defined == set(errors.__all__)
    assert len(errors.__all__) == 18


@pytest.mark.parametrize(
    ("child", "parent"),
    [
        (ConfigurationError, FlowplexError),
        (ClassPathError, ConfigurationError),
        (FlowDefinitionError, FlowplexError),
        (FlowStateError, FlowDefinitionError),
        (FlowInstanceError, FlowplexError),
        (MessagingError, FlowplexError),
        (InterfaceError, MessagingError),
        (UnknownInstanceError, MessagingError),
        (FlowError, MessagingError),
        (FlowTimeoutError, FlowplexError),
        (BackendError, FlowplexError),
        (DuplicateKeyError, BackendError),
        (KeyFileError, ConfigurationError),
        (SignatureError, FlowplexError),
        (PermissionDeniedError, FlowplexError),
        (StorageUnwritableError, BackendError),
    ],
    ids=lambda c: c.__name__,
)
def test_direct_parent(child: type[Exception], parent: type[Exception]) -> None:
    assert child.__bases__[0] is parent


@pytest.mark.parametrize(
    ("cls", "not_a"),
    [
        (ClassPathError, FlowDefinitionError),
        (FlowStateError, ConfigurationError),
        (FlowInstanceError, MessagingError),
        (InterfaceError, FlowDefinitionError),
        (BackendError, MessagingError),
        (FlowError, FlowInstanceError),
    ],
    ids=lambda c: c.__name__,
)
def test_siblings_are_not_related(cls: type[Exception], not_a: type[Exception]) -> None:
    assert not issubclass(cls, not_a)


def test_flow_timeout_error_is_a_builtin_timeout_error() -> None:
    assert issubclass(FlowTimeoutError, TimeoutError)
    with pytest.raises(TimeoutError, match="no reply within 5s"):
        raise FlowTimeoutError("no reply within 5s")
    assert not issubclass(FlowplexError, TimeoutError)
    assert not issubclass(BackendError, TimeoutError)


def test_catching_a_parent_catches_the_child() -> None:
    with pytest.raises(ConfigurationError) as info:
        raise ClassPathError("module 'x' not found")
    assert type(info.value) is ClassPathError
    assert str(info.value) == "module 'x' not found"


def test_flow_instance_error_text_and_attributes() -> None:
    err = FlowInstanceError("reverse/atomic", "alice", "no such flow")

    assert str(err) == (
        "Failed to get flow instance at reverse/atomic served by user alice.\nMessage: no such flow"
    )
    assert err.flow_endpoint == "reverse/atomic"
    assert type(err.flow_endpoint) is str
    assert err.user_id == "alice"
    assert err.reason == "no such flow"
    assert err.args == (str(err),)


def test_flow_error_fields_and_text_with_traceback_and_flow_id() -> None:
    tb = 'Traceback (most recent call last):\n  File "flow.py", line 3\nValueError: bad\n\n'
    err = FlowError("ValueError", "bad number", tb, flow_id="f-123")

    assert isinstance(err, MessagingError)
    assert err.remote_type == "ValueError"
    assert err.remote_message == "bad number"
    assert err.remote_traceback == tb
    assert err.flow_id == "f-123"
    assert str(err) == (
        "ValueError in flow instance f-123: bad number\n\n"
        "Remote traceback:\n"
        'Traceback (most recent call last):\n  File "flow.py", line 3\nValueError: bad'
    )


def test_flow_error_minimal_text() -> None:
    err = FlowError("KeyError", "'number'")

    assert str(err) == "KeyError: 'number'"
    assert err.remote_traceback == ""
    assert err.flow_id is None
    assert "Remote traceback" not in str(err)


def _doc_tree() -> list[tuple[str, str]]:
    """(class, parent) pairs drawn by the tree in the errors module docstring (the subsystems'
    classes included)."""
    doc = errors.__doc__
    assert doc is not None
    lines = doc.splitlines()
    root_index = next(i for i, line in enumerate(lines) if line.strip() == "FlowplexError")
    pairs: list[tuple[str, str]] = []
    stack: list[tuple[int, str]] = [(-1, "FlowplexError")]
    for line in lines[root_index + 1 :]:
        if not line.strip():
            break
        match = re.search(r"── (\w+)", line)
        assert match, f"unexpected tree line: {line!r}"
        column = match.start()
        while stack[-1][0] >= column:
            stack.pop()
        pairs.append((match.group(1), stack[-1][1]))
        stack.append((column, match.group(1)))
    return pairs


SUBSYSTEMS = ("engine", "mesh", "artifacts")


def _error_classes() -> dict[str, type]:
    """Every exported flowplex error class, by name: errors.py's and the subsystems'."""
    found = {name: getattr(errors, name) for name in errors.__all__}
    for sub in SUBSYSTEMS:
        module = importlib.import_module(f"flowplex.{sub}")
        for name in module.__all__:
            value = getattr(module, name)
            if isinstance(value, type) and issubclass(value, errors.FlowplexError):
                found.setdefault(name, value)
    return found


def test_module_docstring_draws_every_class() -> None:
    drawn = {"FlowplexError"} | {name for name, _ in _doc_tree()}
    assert drawn == set(_error_classes())


def test_module_docstring_tree_matches_the_real_hierarchy() -> None:
    classes = _error_classes()
    for name, parent in _doc_tree():
        assert classes[name].__bases__[0].__name__ == parent, name
