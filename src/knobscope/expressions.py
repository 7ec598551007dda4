"""Safe arithmetic/boolean expressions for constraints and derived quantities.

Spec strings such as ``"top_k * num_active_blocks <= 256"`` or ``"ceil(seq_len / block_size)"``
are parsed with :mod:`ast` and evaluated by walking a whitelist of node types. Nothing is ever
passed to Python's ``eval``: attribute access, subscripts, calls to anything but the functions
below, lambdas and comprehensions are rejected when the spec is loaded.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

from knobscope.errors import ExpressionError

__all__ = ["Expression", "FUNCTIONS"]

FUNCTIONS = {
    "ceil": math.ceil,
    "floor": math.floor,
    "log2": math.log2,
    "log": math.log,
    "sqrt": math.sqrt,
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
}

_BINARY = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_ALLOWED = (
    "numbers, strings, knob and derived names, + - * / // % **, comparisons, "
    "and/or/not, 'x if c else y', lists, and the functions " + ", ".join(sorted(FUNCTIONS))
)


@dataclass(frozen=True)
class Expression:
    """A parsed expression. ``names`` are the variables it reads (validated against the space)."""

    source: str
    tree: ast.Expression = field(repr=False, compare=False)
    names: frozenset[str] = field(compare=False)

    @classmethod
    def parse(cls, source: str) -> Expression:
        if not isinstance(source, str) or not source.strip():
            raise ExpressionError(f"expression {source!r} must be a non-empty string")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExpressionError(f"expression {source!r} is not valid syntax: {exc.msg}") from None
        names: set[str] = set()
        for node in ast.walk(tree):
            _check_node(node, source)
            if isinstance(node, ast.Name) and node.id not in FUNCTIONS:
                names.add(node.id)
        return cls(source=source, tree=tree, names=frozenset(names))

    def evaluate(self, variables: Mapping[str, object]) -> object:
        try:
            return _eval(self.tree.body, variables)
        except ExpressionError:
            raise
        except (ArithmeticError, ValueError, TypeError) as exc:
            raise ExpressionError(f"expression {self.source!r} failed on {dict(variables)}: {exc}") from None


def _check_node(node: ast.AST, source: str) -> None:
    ok = (
        ast.Expression, ast.Constant, ast.Name, ast.Load, ast.BinOp, ast.UnaryOp, ast.BoolOp,
        ast.Compare, ast.IfExp, ast.List, ast.Tuple, ast.And, ast.Or, ast.Call,
        *_BINARY, *_UNARY, *_COMPARE,
    )  # fmt: skip
    if not isinstance(node, ok):
        raise ExpressionError(
            f"expression {source!r} uses {type(node).__name__}, which is not allowed; allowed: {_ALLOWED}"
        )
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS or node.keywords:
            raise ExpressionError(
                f"expression {source!r} calls {ast.unparse(node.func)}, which is not allowed; "
                f"allowed functions: {', '.join(sorted(FUNCTIONS))}"
            )


def _eval(node: ast.AST, env: Mapping[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        try:
            return env[node.id]
        except KeyError:
            raise ExpressionError(f"unknown name {node.id!r}; known: {', '.join(sorted(env))}") from None
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_eval(node.left, env), _eval(node.right, env))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BoolOp):
        values = (_eval(v, env) for v in node.values)
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators):
            right = _eval(comparator, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.Call):
        return FUNCTIONS[node.func.id](*(_eval(a, env) for a in node.args))  # type: ignore[union-attr]
    raise ExpressionError(f"unsupported expression node {type(node).__name__}")
