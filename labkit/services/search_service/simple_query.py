"""Azure AI Search's simple query syntax, parsed into a query tree.

Introduced in notebooks/02_index_data.ipynb.

Supported: terms, "quoted phrases", `term*` prefixes, `-` (NOT), `+` (AND), `|` (OR),
parentheses, `\\` escapes and `*` alone for everything. Adjacent clauses are joined by the
search mode: `any` -> OR, `all` -> AND. As in Azure, a negated clause under OR means
"or does not contain" (`wifi -luxury` with searchMode=any matches documents that contain wifi or
do not contain luxury). Operators fold left to right, like Lucene's simple query parser.
Fuzzy and proximity operators (`~`) belong to the full Lucene syntax and are refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import unsupported

_TOKEN_CHARS = re.compile(r"[^\W_]+")


def analyze(text: str) -> list[str]:
    """Lower-cased alphanumeric tokens, as the FTS5 unicode61 tokenizer produces them."""
    return [t.lower() for t in _TOKEN_CHARS.findall(text)]


@dataclass
class Term:
    tokens: list[str]
    prefix: bool = False
    phrase: bool = False


@dataclass
class MatchAll:
    pass


@dataclass
class NotQ:
    child: object


@dataclass
class AndQ:
    children: list[object]


@dataclass
class OrQ:
    children: list[object]


Query = Term | MatchAll | NotQ | AndQ | OrQ


@dataclass
class _Lex:
    kind: str  # word phrase op lparen rparen
    text: str
    prefix: bool = False


def _lex(text: str) -> list[_Lex]:
    out: list[_Lex] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch.isspace():
            i += 1
        elif ch in "+|-" and (i == 0 or text[i - 1].isspace() or text[i - 1] in "+|-(" or ch != "-"):
            out.append(_Lex("op", ch))
            i += 1
        elif ch == "(":
            out.append(_Lex("lparen", ch))
            i += 1
        elif ch == ")":
            out.append(_Lex("rparen", ch))
            i += 1
        elif ch == '"':
            j, buf = i + 1, []
            while j < n and text[j] != '"':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                buf.append(text[j])
                j += 1
            out.append(_Lex("phrase", "".join(buf)))
            i = j + 1
            if i < n and text[i] == "~":
                raise unsupported(
                    "Proximity search ('\"...\"~N', full Lucene syntax) in the simple query syntax"
                )
        else:
            j, buf = i, []
            while j < n and not text[j].isspace() and text[j] not in '()"|+':
                if text[j] == "\\" and j + 1 < n:
                    j += 1
                elif text[j] == "~":
                    raise unsupported("Fuzzy search ('term~', full Lucene syntax) in the simple query syntax")
                buf.append(text[j])
                j += 1
            word = "".join(buf)
            prefix = word.endswith("*") and not text[j - 2 : j] == "\\*"
            out.append(_Lex("word", word.rstrip("*") if prefix else word, prefix))
            i = j
    return out


class _Parser:
    def __init__(self, lexemes: list[_Lex], default_and: bool) -> None:
        self.lx = lexemes
        self.i = 0
        self.default_and = default_and

    def sequence(self, depth: int) -> Query | None:
        result: Query | None = None
        while self.i < len(self.lx):
            lex = self.lx[self.i]
            if lex.kind == "rparen":
                if depth > 0:
                    return result
                self.i += 1  # a stray ')' is ignored, as Lucene's simple parser does
                continue
            op = "default"
            negate = False
            while self.i < len(self.lx) and self.lx[self.i].kind == "op":
                sym = self.lx[self.i].text
                if sym == "-":
                    negate = not negate
                else:
                    op = "and" if sym == "+" else "or"
                self.i += 1
            if self.i >= len(self.lx) or self.lx[self.i].kind == "rparen":
                continue
            unit = self.unit(depth)
            if unit is None:
                continue
            if negate:
                unit = NotQ(unit)
            if result is None:
                result = unit
                continue
            use_and = op == "and" or (op == "default" and self.default_and)
            result = _join(AndQ if use_and else OrQ, result, unit)
        return result

    def unit(self, depth: int) -> Query | None:
        lex = self.lx[self.i]
        self.i += 1
        if lex.kind == "lparen":
            inner = self.sequence(depth + 1)
            if self.i < len(self.lx) and self.lx[self.i].kind == "rparen":
                self.i += 1
            return inner
        if lex.kind == "rparen":
            return None
        if lex.kind == "word" and lex.text == "" and lex.prefix:
            return MatchAll()
        tokens = analyze(lex.text)
        if not tokens:
            return None
        return Term(tokens, prefix=lex.prefix, phrase=lex.kind == "phrase" or len(tokens) > 1)


def _join(kind: type[AndQ] | type[OrQ], left: Query, right: Query) -> Query:
    if isinstance(left, kind):
        return kind([*left.children, right])
    return kind([left, right])


def parse_simple_query(text: str | None, search_mode: str = "any") -> Query | None:
    """The query tree, `MatchAll()` for `*` or an empty query, None when nothing can match
    (for example only punctuation)."""
    if text is None or not text.strip() or text.strip() == "*":
        return MatchAll()
    tree = _Parser(_lex(text), default_and=search_mode == "all").sequence(0)
    return tree
