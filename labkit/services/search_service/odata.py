"""The OData subset Azure AI Search accepts in `$filter` and `$orderby`, parsed into a small AST.

Introduced in notebooks/02_index_data.ipynb.

Filters: `eq ne gt ge lt le`, `and or not`, parentheses, `search.in(field, 'a,b'[, 'delims'])`,
`field/any(t: ...)`, `field/all(t: ...)`, `field/any()`, and literals (strings in single quotes
with '' as escape, numbers, true/false, null, unquoted ISO 8601 date-times). Positions in errors
are 0-based character offsets into the expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .values import parse_datetime


class ODataError(ValueError):
    """A syntax or semantic problem in an expression, with the offending character position."""

    def __init__(self, message: str, position: int | None = None, unsupported: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.unsupported = unsupported


COMPARISONS = ("eq", "ne", "gt", "ge", "lt", "le")
UNSUPPORTED_FUNCTIONS = ("search.ismatch", "search.ismatchscoring", "geo.distance", "geo.intersects")

_DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d{1,7})?)?(?:Z|z|[+-]\d{2}:\d{2})"
_TOKEN = re.compile(
    rf"(?P<ws>\s+)|(?P<datetime>{_DATETIME})|(?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)"
    r"|(?P<string>'(?:[^']|'')*')|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|(?P<punct>[(),/:])"
)


@dataclass
class Token:
    kind: str  # datetime number string ident punct end
    text: str
    pos: int
    value: Any = None


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            if text[pos] == "'":
                raise ODataError("unterminated string literal", pos)
            raise ODataError(f"unexpected character '{text[pos]}'", pos)
        kind = m.lastgroup or ""
        raw = m.group(0)
        if kind == "number" and m.end() < len(text) and (text[m.end()].isalpha() or text[m.end()] == "_"):
            raise ODataError(f"unexpected character '{text[m.end()]}'", m.end())
        if kind != "ws":
            tok = Token(kind, raw, pos)
            if kind == "string":
                tok.value = raw[1:-1].replace("''", "'")
            elif kind == "number":
                tok.value = float(raw) if any(c in raw for c in ".eE") else int(raw)
            elif kind == "datetime":
                moment = parse_datetime(raw)
                if moment is None:
                    raise ODataError(f"invalid date-time literal '{raw}'", pos)
                tok.value = moment
            tokens.append(tok)
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


# ---------------------------------------------------------------------------- AST


@dataclass
class Literal:
    value: Any  # str, int, float, bool, None or datetime
    pos: int

    @property
    def kind(self) -> str:
        if self.value is None:
            return "null"
        if isinstance(self.value, bool):
            return "bool"
        if isinstance(self.value, datetime):
            return "datetime"
        if isinstance(self.value, int | float):
            return "number"
        return "string"


@dataclass
class FieldRef:
    name: str
    pos: int


@dataclass
class VarRef:
    name: str
    pos: int


@dataclass
class Compare:
    op: str
    left: Any
    right: Any
    pos: int


@dataclass
class BoolOp:
    op: str  # 'and' | 'or'
    left: Any
    right: Any
    pos: int


@dataclass
class Not:
    operand: Any
    pos: int


@dataclass
class SearchIn:
    target: Any  # FieldRef or VarRef
    values: list[str]
    pos: int


@dataclass
class Lambda:
    collection: FieldRef
    kind: str  # 'any' | 'all'
    var: str | None
    body: Any | None
    pos: int


@dataclass
class OrderKey:
    field: str | None  # None means search.score()
    descending: bool
    pos: int = 0


@dataclass
class _Parser:
    text: str
    tokens: list[Token]
    i: int = 0
    scope: list[str] = field(default_factory=list)

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def advance(self) -> Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def fail(self, what: str, tok: Token | None = None) -> ODataError:
        tok = tok or self.tok
        found = "the end of the expression" if tok.kind == "end" else f"'{tok.text}'"
        return ODataError(f"{what}, found {found}", tok.pos)

    def expect(self, text: str) -> Token:
        if self.tok.text != text or self.tok.kind not in ("punct", "ident"):
            raise self.fail(f"expected '{text}'")
        return self.advance()

    def is_word(self, word: str) -> bool:
        return self.tok.kind == "ident" and self.tok.text == word

    # expr := and ('or' and)* ; and := unary ('and' unary)* ; unary := 'not' unary | comparison
    def parse_or(self) -> Any:
        node = self.parse_and()
        while self.is_word("or"):
            pos = self.advance().pos
            node = BoolOp("or", node, self.parse_and(), pos)
        return node

    def parse_and(self) -> Any:
        node = self.parse_comparison()
        while self.is_word("and"):
            pos = self.advance().pos
            node = BoolOp("and", node, self.parse_comparison(), pos)
        return node

    def parse_comparison(self) -> Any:
        left = self.parse_unary()
        if self.tok.kind == "ident" and self.tok.text in COMPARISONS:
            op_tok = self.advance()
            right = self.parse_unary()
            return Compare(op_tok.text, left, right, op_tok.pos)
        return left

    def parse_unary(self) -> Any:
        if self.is_word("not"):
            pos = self.advance().pos
            return Not(self.parse_unary(), pos)
        return self.parse_primary()

    def parse_primary(self) -> Any:
        tok = self.tok
        if tok.kind == "punct" and tok.text == "(":
            self.advance()
            node = self.parse_or()
            self.expect(")")
            return node
        if tok.kind in ("string", "number", "datetime"):
            self.advance()
            return Literal(tok.value, tok.pos)
        if tok.kind != "ident":
            raise self.fail("expected a field, a literal or '('")
        if tok.text in ("true", "false"):
            self.advance()
            return Literal(tok.text == "true", tok.pos)
        if tok.text == "null":
            self.advance()
            return Literal(None, tok.pos)
        if tok.text in ("and", "or", *COMPARISONS):
            raise self.fail("expected a field, a literal or '('")
        if self.tokens[self.i + 1].text == "(" and self.tokens[self.i + 1].kind == "punct":
            return self.parse_function()
        self.advance()
        if "." in tok.text:
            raise ODataError(f"could not find a property named '{tok.text}'", tok.pos)
        ref: Any = VarRef(tok.text, tok.pos) if tok.text in self.scope else FieldRef(tok.text, tok.pos)
        if self.tok.kind == "punct" and self.tok.text == "/":
            return self.parse_lambda(ref)
        return ref

    def parse_function(self) -> Any:
        name_tok = self.advance()
        name = name_tok.text
        if name in UNSUPPORTED_FUNCTIONS:
            raise ODataError(f"The function '{name}'", name_tok.pos, unsupported=True)
        if name != "search.in":
            raise ODataError(f"unknown function '{name}'", name_tok.pos)
        self.expect("(")
        target_tok = self.tok
        if target_tok.kind != "ident" or "." in target_tok.text:
            raise self.fail("search.in expects a field as its first argument")
        self.advance()
        target: Any = (
            VarRef(target_tok.text, target_tok.pos)
            if target_tok.text in self.scope
            else FieldRef(target_tok.text, target_tok.pos)
        )
        self.expect(",")
        if self.tok.kind != "string":
            raise self.fail("search.in expects a string of values as its second argument")
        values_text = self.advance().value
        delimiters = " ,"
        if self.tok.kind == "punct" and self.tok.text == ",":
            self.advance()
            if self.tok.kind != "string" or not self.tok.value:
                raise self.fail("search.in expects a non-empty string of delimiters as its third argument")
            delimiters = self.advance().value
        self.expect(")")
        pattern = "[" + re.escape(delimiters) + "]"
        values = [v for v in re.split(pattern, values_text) if v != ""]
        return SearchIn(target, values, name_tok.pos)

    def parse_lambda(self, ref: Any) -> Lambda:
        if not isinstance(ref, FieldRef):
            raise self.fail("a range variable cannot be navigated")
        self.expect("/")
        kind_tok = self.tok
        if kind_tok.kind != "ident" or kind_tok.text not in ("any", "all"):
            raise self.fail("expected 'any' or 'all' after '/'")
        self.advance()
        self.expect("(")
        if self.tok.kind == "punct" and self.tok.text == ")":
            if kind_tok.text == "all":
                raise self.fail("'all' requires a lambda expression")
            self.advance()
            return Lambda(ref, "any", None, None, kind_tok.pos)
        var_tok = self.tok
        if var_tok.kind != "ident" or "." in var_tok.text:
            raise self.fail("expected a range variable name")
        if self.scope:
            raise ODataError("nested lambda expressions are not allowed", var_tok.pos)
        self.advance()
        self.expect(":")
        self.scope.append(var_tok.text)
        body = self.parse_or()
        self.scope.pop()
        self.expect(")")
        return Lambda(ref, kind_tok.text, var_tok.text, body, kind_tok.pos)


def parse_filter(text: str) -> Any:
    """Parse a `$filter` expression; raises ODataError with a position on bad syntax."""
    if not text.strip():
        raise ODataError("the expression is empty", 0)
    parser = _Parser(text, tokenize(text))
    node = parser.parse_or()
    if parser.tok.kind != "end":
        raise parser.fail("expected 'and', 'or' or the end of the expression")
    return node


def _split_top_level(text: str) -> list[tuple[str, int]]:
    parts: list[tuple[str, int]] = []
    depth, start, quoted = 0, 0, False
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append((text[start:i], start))
            start = i + 1
    parts.append((text[start:], start))
    return parts


def parse_orderby(text: str) -> list[OrderKey]:
    """`field [asc|desc], search.score() desc, ...` (at most 32 clauses)."""
    keys: list[OrderKey] = []
    for part, offset in _split_top_level(text):
        stripped = part.strip()
        pos = offset + (len(part) - len(part.lstrip()))
        if not stripped:
            raise ODataError("expected a sort expression", pos)
        m = re.fullmatch(r"(?P<expr>.+?)(?:\s+(?P<dir>asc|desc))?", stripped)
        assert m is not None
        expr = m.group("expr").strip()
        descending = m.group("dir") == "desc"
        if re.fullmatch(r"search\.score\(\s*\)", expr):
            keys.append(OrderKey(None, descending, pos))
            continue
        fn = re.match(r"([A-Za-z_][\w.]*)\s*\(", expr)
        if fn:
            if fn.group(1) in UNSUPPORTED_FUNCTIONS:
                raise ODataError(f"The function '{fn.group(1)}' in $orderby", pos, unsupported=True)
            raise ODataError(f"unknown function '{fn.group(1)}'", pos)
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", expr):
            bad = next((i for i, c in enumerate(expr) if not (c.isalnum() or c == "_")), 0)
            raise ODataError(f"unexpected '{expr[bad]}' in a sort expression", pos + bad)
        keys.append(OrderKey(expr, descending, pos))
    if len(keys) > 32:
        raise ODataError("$orderby supports at most 32 clauses", 0)
    return keys


def parse_field_list(text: str) -> list[str]:
    """`$select` / `searchFields`: comma-separated names ('*' stays '*')."""
    return [part.strip() for part in text.split(",") if part.strip()]
