"""The ``/flows`` query language: a small hand-written parser, no ``eval``.

Grammar (keywords are case-insensitive; ``|``, ``&`` and prefix ``~`` are pandas-style
aliases of ``or``, ``and`` and ``not``)::

    expr       := and_expr (("or" | "|") and_expr)*
    and_expr   := unary (("and" | "&") unary)*
    unary      := ("not" | "~") unary | primary
    primary    := "(" expr ")" | call | comparison
    call       := ["@"] "tag" "(" STRING ")"          the row has this tag (case-insensitive)
    comparison := operand OP operand | operand ["not"] "in" (operand | list)
    OP         := "==" | "!=" | "<" | "<=" | ">" | ">=" | "~"
    list       := "[" [operand ("," operand)*] "]"
    operand    := FIELD | STRING | "null"

- ``==``, ``!=`` and the orderings compare text exactly (``tags`` as ``"a, b"``).
- ``field ~ "text"``: the field contains ``text``, ignoring case (``tags``: one of the tags
  does). ``~`` between two operands is this "contains"; in front of an expression it is
  "not", so ``~ name ~ "beta"`` reads "name does not contain beta". ``text`` is plain text,
  not a regular expression.
- ``"text" in field`` is the same case-insensitive substring test (on ``tags``: one tag equals
  ``text``); ``field in ["a", "b"]`` holds when the field equals one of the values (on
  ``tags``: when one of the tags does).
- A field with no value (a flow without an author or description, a node without an
  organization, a timestamp a node does not report) is null, and null equals both ``null``
  and the empty string: ``author == ""`` and ``author == null`` both find the flows that name
  no author. "missing author" and "missing description" are only what the listing shows for
  them, so ``author == "missing author"`` finds a flow only if its author is that text. An
  ordering (``<``, ``>``...) with null is false.

Examples: ``organization == "node1" and not tag("beta")``, ``description ~ "report"``,
``organization in ["node1", "node2"]``, ``author == ""``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ._records import MeshInputError

__all__ = ["FIELDS", "Predicate", "QueryError", "compile_query"]

#: The row fields a query may name.
FIELDS = (
    "registry",
    "node",
    "organization",
    "created",
    "modified",
    "heartbeat",
    "url",
    "name",
    "author",
    "description",
    "tags",
    "status",
)

Predicate = Callable[[Mapping[str, Any]], bool]

#: Limits that keep a hostile query from exhausting the parser's stack or the CPU.
MAX_LENGTH = 2_000
MAX_DEPTH = 50


class QueryError(MeshInputError):
    """A ``q`` expression that does not parse; the message names the column."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "op", "str", "name", "end"
    text: str
    value: str
    pos: int


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<str>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<op>==|!=|<=|>=|<|>|\(|\)|\[|\]|,|\||&|~|@)
  | (?P<name>[A-Za-z_][A-Za-z_0-9]*)
    """,
    re.VERBOSE,
)
_ESCAPE = re.compile(r"\\(.)")


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise QueryError(f"unexpected {text[pos]!r} at column {pos + 1}")
        kind = match.lastgroup or ""
        raw = match.group()
        if kind == "str":
            tokens.append(_Token("str", raw, _ESCAPE.sub(r"\1", raw[1:-1]), pos))
        elif kind == "name":
            tokens.append(_Token("name", raw, raw.lower(), pos))
        elif kind == "op":
            tokens.append(_Token("op", raw, raw, pos))
        pos = match.end()
    tokens.append(_Token("end", "end of query", "", pos))
    return tokens


def _text(value: Any) -> str | None:
    if isinstance(value, list):
        return ", ".join(value)
    return value if value is None or isinstance(value, str) else str(value)


def _contains(needle: Any, haystack: Any) -> bool:
    """``needle in haystack``: a case-insensitive substring (a list: one item equals it)."""
    if needle is None:
        return False
    n = str(_text(needle)).casefold()
    if isinstance(haystack, list):
        return any(str(item).casefold() == n for item in haystack)
    return n in str(haystack or "").casefold()


def _like(haystack: Any, needle: Any) -> bool:
    """``haystack ~ needle``: contains, ignoring case (a list: one item contains it)."""
    if needle is None:
        return False
    n = str(_text(needle)).casefold()
    if isinstance(haystack, list):
        return any(n in str(item).casefold() for item in haystack)
    return n in str(haystack or "").casefold()


def _member(value: Any, options: list[Any]) -> bool:
    """``value in [options]``: equals one of them (a list: one of its items does)."""
    wanted = {_text(o) or "" for o in options}
    if isinstance(value, list):
        return any(str(item) in wanted for item in value)
    return (_text(value) or "") in wanted


def _compare(op: str, left: Any, right: Any) -> bool:
    a, b = _text(left), _text(right)
    if op in {"==", "!="}:
        # No value and the empty text are the same: author == "" finds flows without one.
        return ((a or "") == (b or "")) is (op == "==")
    if op == "~":
        return _like(left, right)
    if a is None or b is None:
        return False
    if op == "<":
        return a < b
    if op == "<=":
        return a <= b
    if op == ">":
        return a > b
    return a >= b


Operand = Callable[[Mapping[str, Any]], Any]


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def _error(self, expected: str) -> QueryError:
        tok = self.tok
        found = "end of query" if tok.kind == "end" else repr(tok.text)
        return QueryError(f"expected {expected} at column {tok.pos + 1}, found {found}")

    def _is(self, *words: str) -> bool:
        tok = self.tok
        return (tok.kind == "op" and tok.value in words) or (
            tok.kind == "name" and tok.value in words
        )

    def _expect_op(self, op: str) -> None:
        if not (self.tok.kind == "op" and self.tok.value == op):
            raise self._error(repr(op))
        self.i += 1

    def parse(self) -> Predicate:
        if self.tok.kind == "end":
            raise QueryError("the query is empty")
        pred = self._or()
        if self.tok.kind != "end":
            raise self._error("'and', 'or' or the end of the query")
        return pred

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._is("or", "|"):
            self.i += 1
            parts.append(self._and())
        if len(parts) == 1:
            return parts[0]
        return lambda row: any(p(row) for p in parts)

    def _and(self) -> Predicate:
        parts = [self._unary()]
        while self._is("and", "&"):
            self.i += 1
            parts.append(self._unary())
        if len(parts) == 1:
            return parts[0]
        return lambda row: all(p(row) for p in parts)

    def _unary(self) -> Predicate:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise QueryError(f"the query nests deeper than {MAX_DEPTH} levels")
        try:
            if self._is("not", "~"):
                self.i += 1
                inner = self._unary()
                return lambda row: not inner(row)
            return self._primary()
        finally:
            self.depth -= 1

    def _primary(self) -> Predicate:
        tok = self.tok
        if tok.kind == "op" and tok.value == "(":
            self.i += 1
            inner = self._or()
            self._expect_op(")")
            return inner
        if tok.kind == "op" and tok.value == "@":
            self.i += 1
            if self.tok.kind != "name":
                raise self._error("a function name after '@'")
            return self._call()
        if tok.kind == "name" and self.tokens[self.i + 1].text == "(":
            return self._call()
        return self._comparison()

    def _call(self) -> Predicate:
        tok = self.tok
        if tok.value != "tag":
            raise QueryError(f"unknown function {tok.text!r} at column {tok.pos + 1} (use tag)")
        self.i += 1
        self._expect_op("(")
        if self.tok.kind != "str":
            raise self._error('a quoted tag, like tag("beta")')
        wanted = self.tok.value.casefold()
        self.i += 1
        self._expect_op(")")
        return lambda row: any(str(t).casefold() == wanted for t in row.get("tags") or ())

    def _operand(self) -> Operand:
        tok = self.tok
        if tok.kind == "str":
            self.i += 1
            value = tok.value
            return lambda row: value
        if tok.kind == "name":
            if tok.value in {"null", "none"}:
                self.i += 1
                return lambda row: None
            if tok.value not in FIELDS:
                raise QueryError(
                    f"unknown field {tok.text!r} at column {tok.pos + 1} "
                    f"(fields: {', '.join(FIELDS)})"
                )
            self.i += 1
            name = tok.value
            return lambda row: row.get(name)
        raise self._error("a field name or a quoted value")

    def _comparison(self) -> Predicate:
        left = self._operand()
        tok = self.tok
        if tok.kind == "op" and tok.value in {"==", "!=", "<", "<=", ">", ">=", "~"}:
            op = tok.value
            self.i += 1
            right = self._operand()
            return lambda row: _compare(op, left(row), right(row))
        negate = False
        if self._is("not") and self.tokens[self.i + 1].value == "in":
            negate = True
            self.i += 1
        if self._is("in"):
            self.i += 1
            test: Callable[[Any, Any], bool] = _contains
            if self.tok.kind == "op" and self.tok.value == "[":
                right = self._list()
                test = _member
            else:
                right = self._operand()
            if negate:
                return lambda row: not test(left(row), right(row))
            return lambda row: test(left(row), right(row))
        raise self._error("a comparison ('==', '!=', '<', '>', '~', 'in', ...)")

    def _list(self) -> Operand:
        self._expect_op("[")
        items: list[Operand] = []
        while not (self.tok.kind == "op" and self.tok.value == "]"):
            if items:
                self._expect_op(",")
            items.append(self._operand())
        self.i += 1
        return lambda row: [item(row) for item in items]


def compile_query(text: str) -> Predicate:
    """Compile ``text`` into a predicate over listing rows; :class:`QueryError` if invalid."""
    if not isinstance(text, str):
        raise QueryError(f"a query must be a string, got {text!r}")
    if len(text) > MAX_LENGTH:
        raise QueryError(f"the query is longer than {MAX_LENGTH} characters")
    return _Parser(text).parse()
