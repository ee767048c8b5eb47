"""Compile a parsed `$filter` into a SQLite WHERE clause over the per-index `docs` table.

Introduced in notebooks/02_index_data.ipynb.

OData null semantics are kept: `f ne 'x'` is true when f is null, and a range comparison with
null is false (also under `not`). String collections live in the `coll` table and are reached
with EXISTS sub-queries.
"""

from __future__ import annotations

import json
from typing import Any

from .errors import SearchError, invalid_expression, unsupported
from .odata import BoolOp, Compare, FieldRef, Lambda, Literal, Not, ODataError, SearchIn, VarRef, parse_filter
from .schema import (
    BOOLEAN,
    DATETIME,
    DOUBLE,
    INT32,
    INT64,
    STRING,
    STRING_COLLECTION,
    Field,
    IndexSchema,
)
from .values import datetime_sort_key

_SQL_OPS = {"eq": "=", "ne": "!=", "gt": ">", "ge": ">=", "lt": "<", "le": "<="}
_OP_NAMES = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
_LITERAL_TYPES = {"string": STRING, "number": "Edm.Double", "bool": BOOLEAN, "datetime": DATETIME}
_COMPATIBLE = {
    STRING: {"string"},
    INT32: {"number"},
    INT64: {"number"},
    DOUBLE: {"number"},
    BOOLEAN: {"bool"},
    DATETIME: {"datetime"},
}


class _Compiler:
    def __init__(self, schema: IndexSchema, text: str, colmap: dict[str, int]) -> None:
        self.schema = schema
        self.text = text
        self.colmap = colmap
        self.params: list[Any] = []

    def column(self, fld: Field) -> str:
        return f"d.c{self.colmap[fld.name]}"

    def error(self, message: str, pos: int | None = None) -> SearchError:
        where = f" at position {pos} in '{self.text}'" if pos is not None else f" in '{self.text}'"
        return invalid_expression(message.rstrip(".") + where + ".", "$filter")

    def field(self, ref: FieldRef) -> Field:
        fld = self.schema.field(ref.name)
        if fld is None:
            raise self.error(
                f"Could not find a property named '{ref.name}' on type 'search.document'", ref.pos
            )
        if not fld.filterable:
            raise invalid_expression(
                f"'{ref.name}' is not a filterable field. Only filterable fields can be used "
                "in filter expressions.",
                "$filter",
            )
        return fld

    def param(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def literal_value(self, lit: Literal) -> Any:
        if lit.kind == "datetime":
            return datetime_sort_key(lit.value)
        if lit.kind == "bool":
            return int(lit.value)
        return lit.value

    # -------------------------------------------------------------- boolean nodes
    def compile(self, node: Any) -> str:
        if isinstance(node, BoolOp):
            return f"({self.compile(node.left)} {node.op.upper()} {self.compile(node.right)})"
        if isinstance(node, Not):
            return f"(NOT {self.compile(node.operand)})"
        if isinstance(node, Compare):
            return self.compare(node)
        if isinstance(node, SearchIn):
            if isinstance(node.target, VarRef):
                raise self.error("the range variable can only be used inside a lambda expression", node.pos)
            fld = self.field(node.target)
            if fld.type != STRING:
                raise self.error(
                    f"search.in can only be used with fields of type Edm.String, but '{fld.name}' "
                    f"is of type {fld.type}",
                    node.pos,
                )
            values = self.param(json.dumps(node.values))
            return f"({self.column(fld)} IN (SELECT value FROM json_each({values})))"
        if isinstance(node, Lambda):
            return self.lambda_(node)
        if isinstance(node, FieldRef):
            fld = self.field(node)
            if fld.type != BOOLEAN:
                raise self.error(
                    f"the field '{fld.name}' of type {fld.type} is not a boolean expression", node.pos
                )
            return f"COALESCE({self.column(fld)} = 1, 0)"
        if isinstance(node, Literal):
            if node.kind != "bool":
                raise self.error("a literal value is not a boolean expression", node.pos)
            return "1" if node.value else "0"
        if isinstance(node, VarRef):
            raise self.error("the range variable is not a boolean expression", node.pos)
        raise self.error("unsupported expression")

    def compare(self, node: Compare) -> str:
        left, right, op = node.left, node.right, node.op
        if isinstance(left, Literal) and not isinstance(right, Literal):
            left, right = right, left
            op = {"gt": "lt", "ge": "le", "lt": "gt", "le": "ge"}.get(op, op)
        if isinstance(left, VarRef):
            raise self.error("the range variable can only be used inside a lambda expression", left.pos)
        if not isinstance(left, FieldRef) or not isinstance(right, Literal):
            raise self.error("comparisons must be between a field and a constant value", node.pos)
        fld = self.field(left)
        if fld.type == STRING_COLLECTION or fld.is_vector:
            raise self.error(
                f"the collection field '{fld.name}' can only be filtered with any/all lambda expressions",
                left.pos,
            )
        return self.comparison_sql(self.column(fld), fld.type, op, right, node.pos)

    def comparison_sql(self, column: str, ftype: str, op: str, lit: Literal, pos: int) -> str:
        if lit.kind == "null":
            if op not in ("eq", "ne"):
                raise self.error("null can only be compared with 'eq' or 'ne'", pos)
            return f"({column} IS {'NOT ' if op == 'ne' else ''}NULL)"
        if lit.kind not in _COMPATIBLE[ftype]:
            raise self.error(
                f"A binary operator with incompatible types was detected. Found operand types "
                f"'{ftype}' and '{_LITERAL_TYPES[lit.kind]}' for operator kind '{_OP_NAMES[op]}'",
                pos,
            )
        if ftype == BOOLEAN and op not in ("eq", "ne"):
            raise self.error("boolean fields can only be compared with 'eq' or 'ne'", pos)
        value = self.param(self.literal_value(lit))
        if op == "eq":
            return f"({column} IS {value})"
        if op == "ne":
            return f"({column} IS NOT {value})"
        return f"COALESCE({column} {_SQL_OPS[op]} {value}, 0)"

    # ------------------------------------------------------------- lambdas
    def lambda_(self, node: Lambda) -> str:
        fld = self.field(node.collection)
        if fld.type != STRING_COLLECTION:
            raise self.error(
                f"any/all can only be used with collection fields, but '{fld.name}' is of type {fld.type}",
                node.pos,
            )
        fno = self.param(self.colmap[fld.name])
        base = f"SELECT 1 FROM coll c WHERE c.id = d.id AND c.f = {fno}"
        if node.body is None:
            return f"EXISTS ({base})"
        self.check_lambda_body(node.body, node.kind, node.var or "")
        body = self.lambda_body(node.body)
        if node.kind == "any":
            return f"EXISTS ({base} AND {body})"
        return f"(NOT EXISTS ({base} AND NOT {body}))"

    def check_lambda_body(self, node: Any, kind: str, var: str) -> None:
        """Azure's rules for string collections: any -> eq / search.in joined by 'or';
        all -> ne / not search.in joined by 'and'."""
        joiner = "or" if kind == "any" else "and"
        if isinstance(node, BoolOp):
            if node.op != joiner:
                raise self.error(
                    f"inside '{kind}' on a string collection, clauses can only be combined with '{joiner}'",
                    node.pos,
                )
            self.check_lambda_body(node.left, kind, var)
            self.check_lambda_body(node.right, kind, var)
            return
        if isinstance(node, Compare):
            expected = "eq" if kind == "any" else "ne"
            refs = [n for n in (node.left, node.right) if isinstance(n, VarRef | FieldRef)]
            if node.op != expected or len(refs) != 1 or not isinstance(refs[0], VarRef):
                raise self.error(
                    f"inside '{kind}' on a string collection, only '{var} {expected} <string>' "
                    f"comparisons are allowed",
                    node.pos,
                )
            return
        if kind == "any" and isinstance(node, SearchIn) and isinstance(node.target, VarRef):
            return
        if (
            kind == "all"
            and isinstance(node, Not)
            and isinstance(node.operand, SearchIn)
            and isinstance(node.operand.target, VarRef)
        ):
            return
        pos = getattr(node, "pos", None)
        allowed = "eq and search.in" if kind == "any" else "ne and not search.in"
        raise self.error(
            f"inside '{kind}' on a string collection only {allowed} over the range variable '{var}' "
            "are allowed",
            pos,
        )

    def lambda_body(self, node: Any) -> str:
        if isinstance(node, BoolOp):
            return f"({self.lambda_body(node.left)} {node.op.upper()} {self.lambda_body(node.right)})"
        if isinstance(node, Not):
            return f"(NOT {self.lambda_body(node.operand)})"
        if isinstance(node, SearchIn):
            return f"(c.v IN (SELECT value FROM json_each({self.param(json.dumps(node.values))})))"
        assert isinstance(node, Compare)
        lit = node.right if isinstance(node.right, Literal) else node.left
        if not isinstance(lit, Literal):
            raise self.error("comparisons must be between the range variable and a constant value", node.pos)
        return self.comparison_sql("c.v", STRING, node.op, lit, node.pos)


def compile_filter(text: str, schema: IndexSchema, colmap: dict[str, int]) -> tuple[str, list[Any]]:
    """SQL condition (over `docs d`) and its parameters for an OData `$filter`; raises SearchError (400).

    `colmap` gives each field's stable number: simple fields are column `d.c<n>`, string collections
    are the rows of `coll` with `f = <n>`."""
    try:
        ast = parse_filter(text)
    except ODataError as exc:
        if exc.unsupported:
            raise unsupported(f"{exc.message} in $filter") from None
        raise invalid_expression(
            f"Syntax error at position {exc.position} in '{text}': {exc.message}.", "$filter"
        ) from None
    compiler = _Compiler(schema, text, colmap)
    sql = compiler.compile(ast)
    return sql, compiler.params
