#!/usr/bin/env python3
"""A small ast-based mutation tester that also mutates what mutmut 3 skips.

mutmut 3 leaves decorated functions (pydantic validators) and module-level code (`Field(...)`
limits, tables) alone. This tool walks the whole module with `ast` and mutates everything:
decorators, class bodies, module-level constants and tables included.

    python tools/mutate.py MODULE_OR_DIR [...] [--tests "pytest args"] [--jobs 2]
                           [--report FILE] [--limit N] [--rev REV] [--dry-run] [--root DIR] [--python EXE]

Each mutant is a small text edit of the module's source (the changed node's source segment, the
rest stays byte-identical); every mutant is checked to parse and to differ from the original AST.
Tests run in private copies of the project (one per worker, made once, in a temp dir): for each
mutant the worker writes the mutated file into its copy, runs
`python -m pytest -x -q -p no:cacheprovider <tests>` under a timeout, and restores the file.
The shared working tree is only read, never written; with --rev REV the copies come from
`git archive REV` instead (a committed state, while others are editing the tree).

Without --tests, each module gets the test files that mention it (tests/test_<name>.py, files
importing it); a mutant that survives those is re-run against the whole suite before it counts
as a survivor, so the score is the whole suite's. With --tests, exactly those args are used.

Exit status is 0 whatever the score: this is a report, not a gate.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import datetime
import os
import queue
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

# --------------------------------------------------------------------------------------------
# Mutants
# --------------------------------------------------------------------------------------------

COMPARE_FLIPS: dict[type, tuple[str, str]] = {
    # op: (regex finding it between the operands, replacement)
    ast.Lt: (r"<(?!=)", "<="),
    ast.LtE: (r"<=", "<"),
    ast.Gt: (r">(?!=)", ">="),
    ast.GtE: (r">=", ">"),
    ast.Eq: (r"==", "!="),
    ast.NotEq: (r"!=", "=="),
    ast.In: (r"(?<![\w.])in\b", "not in"),
    ast.NotIn: (r"(?<![\w.])not\s+in\b", "in"),
    ast.Is: (r"(?<![\w.])is\b", "is not"),
    ast.IsNot: (r"(?<![\w.])is\s+not\b", "is"),
}
BINOP_FLIPS: dict[type, tuple[str, str]] = {
    ast.Add: (r"\+", "-"),
    ast.Sub: (r"-", "+"),
    ast.Mult: (r"\*", "/"),
    ast.Div: (r"(?<!/)/(?!/)", "*"),
    ast.FloorDiv: (r"//", "/"),
}
BOOLOP_FLIPS: dict[type, tuple[str, str]] = {
    ast.And: (r"(?<![\w.])and\b", "or"),
    ast.Or: (r"(?<![\w.])or\b", "and"),
}
# Calls whose arguments are messages for people: mutating their wording does not count.
MESSAGE_FUNCS = {"warn", "warning", "error", "exception", "critical", "info", "debug", "fail", "skip", "xfail"}
MESSAGE_CLASS = re.compile(r"(Error|Exception|Warning)$")
PROBLEM_COLLECTION = re.compile(r"(problem|error|issue|warning|violation|failure|complaint)s?\b", re.I)
PROBLEM_METHODS = {"append", "add", "extend", "insert"}
# Keyword arguments that only carry prose: dropping them is not a behaviour change worth a mutant.
PROSE_KEYWORDS = {"description", "help", "title", "doc", "message", "msg", "comment", "examples"}


@dataclass
class Mutant:
    path: str  # relative to the project root
    line: int
    col: int
    kind: str  # operator family, e.g. "compare", "constant", "drop-element"
    description: str
    start: int  # character offsets of the edit in the original source
    end: int
    replacement: str
    source: str = ""  # the whole mutated module
    mutated_line: str = ""
    status: str = "pending"  # killed | survived | timeout | not-importable | error
    seconds: float = 0.0
    killed_by: str = ""


def _short(value: object, width: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 4] + "…" + text[-3:]


class MutantFinder:
    """Walks one module's AST and records text edits, one per mutant."""

    def __init__(self, path: str, source: str, prose: bool = False) -> None:
        self.path = path
        self.prose = prose
        self.prose_skipped = 0
        self.src = source
        self.tree = ast.parse(source)
        self.orig_dump = ast.dump(self.tree)
        self.lines = source.split("\n")
        self.line_starts: list[int] = []
        offset = 0
        for line in self.lines:
            self.line_starts.append(offset)
            offset += len(line) + 1
        self.parent: dict[int, ast.AST] = {}
        for node in ast.walk(self.tree):
            for child in ast.iter_child_nodes(node):
                self.parent[id(child)] = node
        self.quiet: set[int] = set()  # nodes never mutated (docstrings, messages, forward refs, f-strings)
        self.no_drop: set[int] = set()  # containers whose elements are not dropped (type subscripts)
        self.candidates: list[tuple[Mutant, tuple[ast.AST, ast.AST] | None]] = []
        self.invalid = 0
        self.equivalent = 0

    # ---- positions -------------------------------------------------------------------------
    def pos(self, lineno: int, col_bytes: int) -> int:
        line = self.lines[lineno - 1]
        col = col_bytes if line.isascii() else len(line.encode()[:col_bytes].decode("utf-8", "replace"))
        return self.line_starts[lineno - 1] + col

    def start(self, node: ast.AST) -> int:
        return self.pos(node.lineno, node.col_offset)  # type: ignore[attr-defined]

    def end(self, node: ast.AST) -> int:
        return self.pos(node.end_lineno, node.end_col_offset)  # type: ignore[attr-defined]

    def text(self, node: ast.AST) -> str:
        return self.src[self.start(node) : self.end(node)]

    def line_col(self, offset: int) -> tuple[int, int]:
        line = self.src.count("\n", 0, offset) + 1
        return line, offset - self.line_starts[line - 1]

    # ---- context marking -------------------------------------------------------------------
    def _quiet_subtree(self, node: ast.AST | None) -> None:
        if node is not None:
            for sub in ast.walk(node):
                self.quiet.add(id(sub))

    def _call_name(self, call: ast.Call) -> str:
        func = call.func
        if isinstance(func, ast.Name):
            return func.id
        if isinstance(func, ast.Attribute):
            return func.attr
        return ""

    def is_message_call(self, call: ast.Call) -> bool:
        name = self._call_name(call)
        if name in MESSAGE_FUNCS or MESSAGE_CLASS.search(name):
            return True
        if name in PROBLEM_METHODS and isinstance(call.func, ast.Attribute):
            return bool(PROBLEM_COLLECTION.search(ast.unparse(call.func.value)))
        return False

    def _mark_type_expr(self, node: ast.AST | None) -> None:
        """Strings in a type expression are forward references; Call nodes (Field(...)) are code."""
        if node is None or isinstance(node, ast.Call):
            return
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.quiet.add(id(node))
            return
        if isinstance(node, ast.Subscript):
            literal = (
                isinstance(node.value, (ast.Name, ast.Attribute))
                and (getattr(node.value, "id", None) or getattr(node.value, "attr", None)) == "Literal"
            )
            if literal:
                return
        for child in ast.iter_child_nodes(node):
            self._mark_type_expr(child)

    def mark_contexts(self) -> None:
        for node in ast.walk(self.tree):
            if (
                isinstance(node, ast.Expr)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                self.quiet.add(id(node.value))  # docstrings, attribute docstrings: no-op statements
            elif isinstance(node, ast.JoinedStr):
                self._quiet_subtree(node)  # f-string fragments (and 3.11's unreliable inner positions)
            elif isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
                self._quiet_subtree(node.value)  # only star-imports read __all__: no behaviour to change
            elif isinstance(node, ast.Raise):
                self._quiet_subtree(node.exc)
                self._quiet_subtree(node.cause)
            elif isinstance(node, ast.Assert):
                self._quiet_subtree(node.msg)
            elif isinstance(node, ast.Call) and self.is_message_call(node):
                for arg in node.args:
                    self._quiet_subtree(arg)
                for kw in node.keywords:
                    self._quiet_subtree(kw.value)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                self._mark_type_expr(node.returns)
                for arg in [
                    *node.args.posonlyargs,
                    *node.args.args,
                    *node.args.kwonlyargs,
                    node.args.vararg,
                    node.args.kwarg,
                ]:
                    if arg is not None:
                        self._mark_type_expr(arg.annotation)
            elif isinstance(node, ast.AnnAssign):
                self._mark_type_expr(node.annotation)
            elif isinstance(node, ast.Subscript):
                if isinstance(node.slice, (ast.Tuple, ast.List)):  # dict[str, Any], Callable[[int], str]
                    self.no_drop.add(id(node.slice))
                    for elt in node.slice.elts:
                        if isinstance(elt, (ast.Tuple, ast.List)):
                            self.no_drop.add(id(elt))
            elif isinstance(node, ast.If) and self._is_boilerplate_if(node):
                self._quiet_subtree(node.test)

    @staticmethod
    def _is_boilerplate_if(node: ast.If) -> bool:
        test = ast.unparse(node.test)
        return test in ("TYPE_CHECKING", "typing.TYPE_CHECKING") or "__name__" in test

    # ---- recording ---------------------------------------------------------------------------
    def add(
        self,
        kind: str,
        description: str,
        start: int,
        end: int,
        replacement: str,
        fallback: tuple[ast.AST, ast.AST] | None = None,
    ) -> None:
        line, col = self.line_col(start)
        self.candidates.append((Mutant(self.path, line, col, kind, description, start, end, replacement), fallback))

    def _gap_op(self, left: ast.AST, right: ast.AST, pattern: str) -> tuple[int, int] | None:
        """Find the operator token between two operands (only parentheses, spaces, comments around it)."""
        a, b = self.end(left), self.start(right)
        gap = re.sub(r"#[^\n]*", lambda m: " " * len(m.group()), self.src[a:b])
        match = re.search(pattern, gap)
        return (a + match.start(), a + match.end()) if match else None

    def _string_literal_parts(self, node: ast.Constant) -> tuple[str, str, str, str] | None:
        """(prefix, quote, body, closing) of a single (not implicitly concatenated) string literal."""
        segment = self.text(node)
        match = re.fullmatch(r"([rRuU]?)('''|\"\"\"|'|\")(.*)\2", segment, re.S)
        if not match:
            return None
        prefix, quote, body = match.groups()
        return prefix, quote, body, quote

    # ---- operators ---------------------------------------------------------------------------
    def find(self) -> None:
        self.mark_contexts()
        for node in ast.walk(self.tree):
            if id(node) in self.quiet:
                continue
            if isinstance(node, ast.Compare):
                self.compare(node)
            elif isinstance(node, ast.BinOp):
                self.binop(node)
            elif isinstance(node, ast.AugAssign):
                self.augassign(node)
            elif isinstance(node, ast.BoolOp):
                self.boolop(node)
            elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
                self.not_(node)
            elif isinstance(node, ast.Constant):
                self.constant(node)
            elif isinstance(node, ast.Return):
                self.return_(node)
            elif isinstance(node, ast.If):
                self.if_(node)
            elif isinstance(node, ast.Call):
                self.keywords(node)
            if isinstance(node, (ast.Dict, ast.List, ast.Set, ast.Tuple)):
                self.drop_element(node)

    def compare(self, node: ast.Compare) -> None:
        operands = [node.left, *node.comparators]
        for i, op in enumerate(node.ops):
            if type(op) not in COMPARE_FLIPS:
                continue
            pattern, new = COMPARE_FLIPS[type(op)]
            span = self._gap_op(operands[i], operands[i + 1], pattern)
            if span:
                old = re.sub(r"\s+", " ", self.src[span[0] : span[1]])
                self.add("compare", f"`{old}` → `{new}`", span[0], span[1], new)

    def _is_text(self, node: ast.AST) -> bool:
        return isinstance(node, ast.JoinedStr) or (
            isinstance(node, ast.Constant) and isinstance(node.value, (str, bytes))
        )

    def binop(self, node: ast.BinOp) -> None:
        if type(node.op) not in BINOP_FLIPS or self._is_text(node.left) or self._is_text(node.right):
            return  # string concatenation: `-` would only be a TypeError
        pattern, new = BINOP_FLIPS[type(node.op)]
        span = self._gap_op(node.left, node.right, pattern)
        if span:
            self.add("arithmetic", f"`{self.src[span[0] : span[1]]}` → `{new}`", span[0], span[1], new)

    def augassign(self, node: ast.AugAssign) -> None:
        if type(node.op) not in BINOP_FLIPS or self._is_text(node.value):
            return
        pattern, new = BINOP_FLIPS[type(node.op)]
        span = self._gap_op(node.target, node.value, pattern + "=")
        if span:
            old = self.src[span[0] : span[1]]
            self.add("arithmetic", f"`{old}` → `{new}=`", span[0], span[1], new + "=")

    def boolop(self, node: ast.BoolOp) -> None:
        pattern, new = BOOLOP_FLIPS[type(node.op)]
        spans = [self._gap_op(a, b, pattern) for a, b in zip(node.values, node.values[1:], strict=False)]
        if not spans or not all(spans):
            return
        # One mutant per BoolOp: every `and` of it becomes `or` (as one edit over its extent).
        first, last = spans[0][0], spans[-1][1]  # type: ignore[index]
        pieces, cursor = [], first
        for s, e in spans:  # type: ignore[misc]
            pieces.append(self.src[cursor:s])
            pieces.append(new)
            cursor = e
        old = "and" if new == "or" else "or"
        self.add("boolean", f"`{old}` → `{new}`", first, last, "".join(pieces))

    def not_(self, node: ast.UnaryOp) -> None:
        s = self.start(node)
        match = re.match(r"not\b\s*", self.src[s : self.start(node.operand)])
        if match:
            self.add("boolean", "`not x` → `x`", s, s + match.end(), "")

    def constant(self, node: ast.Constant) -> None:
        value = node.value
        s, e = self.start(node), self.end(node)
        if isinstance(value, bool):
            self.add("constant", f"{value} → {not value}", s, e, str(not value))
        elif isinstance(value, int):
            parent = self.parent.get(id(node))
            name = f"{parent.arg}=" if isinstance(parent, ast.keyword) and parent.arg else ""
            self.add("constant", f"{name}{value} → {name}{value + 1}", s, e, str(value + 1))
            if name and value > 0:  # keyword limits (ge=, max_length=): test both sides of the boundary
                self.add("constant", f"{name}{value} → {name}{value - 1}", s, e, str(value - 1))
        elif isinstance(value, float):
            new = value + 1.0 if value else 1.0
            self.add("constant", f"{value!r} → {new!r}", s, e, repr(new))
        elif isinstance(value, str) and value:
            if not self.prose and _is_prose(value):
                self.prose_skipped += 1
                return  # wording: mutating it says nothing about behaviour
            parts = self._string_literal_parts(node)
            segment = self.text(node)
            closing = 3 if segment.endswith(("'''", '"""')) and len(segment) >= 6 else 1
            repl = segment[:-closing] + "X" + segment[-closing:]
            if self._literal_is(repl, value + "X"):
                self.add("constant", f"{_short(value)} → {_short(value + 'X')}", s, e, repl)
            if parts:  # regular-expression anchors
                prefix, quote, body, closing_q = parts
                if value.startswith("^") and body.startswith("^"):
                    repl = prefix + quote + body[1:] + closing_q
                    if self._literal_is(repl, value[1:]):
                        self.add("regex", f"drop leading `^` of {_short(value)}", s, e, repl)
                if value.endswith("$") and not value.endswith("\\$") and body.endswith("$"):
                    repl = prefix + quote + body[:-1] + closing_q
                    if self._literal_is(repl, value[:-1]):
                        self.add("regex", f"drop trailing `$` of {_short(value)}", s, e, repl)

    @staticmethod
    def _literal_is(text: str, expected: str) -> bool:
        try:
            return ast.literal_eval(text) == expected
        except (ValueError, SyntaxError):
            return False

    def return_(self, node: ast.Return) -> None:
        if node.value is None or (isinstance(node.value, ast.Constant) and node.value.value is None):
            return
        if id(node.value) in self.quiet:
            return
        self.add(
            "return",
            f"`return {_label(self.text(node.value), 40)}` → `return None`",
            self.start(node.value),
            self.end(node.value),
            "None",
        )

    def _body_reports_problem(self, body: list[ast.stmt]) -> bool:
        stack: list[ast.AST] = list(body)
        while stack:
            node = stack.pop()
            if isinstance(node, ast.Raise):
                return True
            if isinstance(node, ast.Call) and self.is_message_call(node):
                return True
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)):
                stack.extend(ast.iter_child_nodes(node))
        return False

    def if_(self, node: ast.If) -> None:
        """`if c:` → `if False:`: the body never runs (the else branch, if any, always does)."""
        if id(node.test) in self.quiet or isinstance(node.test, ast.Constant):
            return
        why = " (its body raises / reports a problem)" if self._body_reports_problem(node.body) else ""
        self.add(
            "if-false",
            f"`if {_label(self.text(node.test), 40)}:` → `if False:`{why}",
            self.start(node.test),
            self.end(node.test),
            "False",
        )

    def keywords(self, node: ast.Call) -> None:
        items = sorted([*node.args, *node.keywords], key=lambda n: (n.lineno, n.col_offset))  # type: ignore
        for kw in node.keywords:
            if kw.arg is None or id(kw.value) in self.quiet:
                continue
            value = kw.value
            if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.USub):
                value = value.operand
            if not isinstance(value, ast.Constant):
                continue
            if isinstance(value.value, str) and kw.arg in PROSE_KEYWORDS:
                continue
            s, e = self._item_removal(items, items.index(kw))
            fallback_call = ast.Call(func=node.func, args=node.args, keywords=[k for k in node.keywords if k is not kw])
            self.add("drop-keyword", f"drop `{kw.arg}={self.text(kw.value)}`", s, e, "", (node, fallback_call))

    def _item_removal(self, items: Sequence[ast.AST], i: int) -> tuple[int, int]:
        """The text to cut to remove items[i] with its comma."""
        spans = [(self.start(it), self.end(it)) for it in items]
        if len(items) == 1:
            return spans[0]
        if i < len(items) - 1:
            return spans[i][0], spans[i + 1][0]
        return spans[i - 1][1], spans[i][1]

    def drop_element(self, node: ast.AST) -> None:
        if id(node) in self.no_drop or id(node) in self.quiet:
            return
        parent = self.parent.get(id(node))
        if isinstance(node, (ast.List, ast.Tuple)) and not isinstance(node.ctx, ast.Load):
            return
        if isinstance(node, ast.Tuple) and not isinstance(
            parent, (ast.Compare, ast.Assign, ast.AnnAssign, ast.keyword, ast.Call, ast.Dict)
        ):
            return  # returned / unpacked tuples: dropping one only breaks the unpacking
        if isinstance(node, ast.Dict):
            items: list[tuple[int, int]] = []
            for k, v in zip(node.keys, node.values, strict=True):
                if k is None:
                    star = self.src.rfind("**", 0, self.start(v))
                    items.append((star, self.end(v)))
                else:
                    items.append((self.start(k), self.end(v)))
            labels = [
                self.text(k) if k is not None else "**" + self.text(v)
                for k, v in zip(node.keys, node.values, strict=True)
            ]
        else:
            elts = node.elts  # type: ignore[attr-defined]
            if any(isinstance(x, ast.Starred) for x in elts) and isinstance(node, ast.Tuple):
                return
            items = [(self.start(x), self.end(x)) for x in elts]
            labels = [self.text(x) for x in elts]
        kind_name = type(node).__name__.lower()
        for i in range(len(items)):
            if len(items) == 1:
                s, e = items[0]
            elif i < len(items) - 1:
                s, e = items[i][0], items[i + 1][0]
            else:
                s, e = items[i - 1][1], items[i][1]
            repl = ""
            fallback: tuple[ast.AST, ast.AST] | None = None
            if isinstance(node, ast.Dict):
                fallback = (
                    node,
                    ast.Dict(
                        keys=[k for j, k in enumerate(node.keys) if j != i],
                        values=[v for j, v in enumerate(node.values) if j != i],
                    ),
                )
            else:
                rest = [x for j, x in enumerate(node.elts) if j != i]  # type: ignore[attr-defined]
                new_node: ast.expr
                if isinstance(node, ast.Set):
                    new_node = (
                        ast.Set(elts=rest) if rest else ast.Call(func=ast.Name("set", ast.Load()), args=[], keywords=[])
                    )
                elif isinstance(node, ast.Tuple):
                    new_node = ast.Tuple(elts=rest, ctx=ast.Load())
                else:
                    new_node = ast.List(elts=rest, ctx=ast.Load())
                fallback = (node, new_node)
                if isinstance(node, (ast.Tuple, ast.Set)) and len(rest) <= 1:
                    # `(a, b)` → `(a,)` needs its comma, `{a}` → `set()`: rewrite the whole literal
                    s, e = self.start(node), self.end(node)
                    repl = ast.unparse(new_node)
            self.add("drop-element", f"drop {kind_name} element `{_label(labels[i])}`", s, e, repl, fallback)

    # ---- validation -----------------------------------------------------------------------------
    def mutants(self) -> list[Mutant]:
        self.find()
        seen: set[tuple[int, int, str]] = set()
        result: list[Mutant] = []
        for mutant, fallback in self.candidates:
            key = (mutant.start, mutant.end, mutant.replacement)
            if key in seen:
                continue
            seen.add(key)
            source = self.src[: mutant.start] + mutant.replacement + self.src[mutant.end :]
            tree = self._parse(source)
            if tree is None and fallback is not None:
                old, new = fallback
                s, e = self.start(old), self.end(old)
                replacement = "(" + ast.unparse(new) + ")"
                source = self.src[:s] + replacement + self.src[e:]
                mutant.start, mutant.end, mutant.replacement = s, e, replacement
                tree = self._parse(source)
            if tree is None:
                self.invalid += 1
                continue
            if ast.dump(tree) == self.orig_dump:
                self.equivalent += 1
                continue
            mutant.source = source
            removed = self.src[mutant.start : mutant.end]
            if not mutant.replacement and "\n" in removed:  # a line-spanning cut: show what went
                mutant.mutated_line = "removed: " + _label(removed.strip().strip(",").strip(), 200)
            else:
                mutant.mutated_line = self._changed_lines(source, mutant.start, mutant.start + len(mutant.replacement))
            result.append(mutant)
        result.sort(key=lambda m: (m.line, m.col, m.description))
        return result

    def _parse(self, source: str) -> ast.Module | None:
        try:
            tree = ast.parse(source)
            compile(tree, self.path, "exec", dont_inherit=True)
            return tree
        except (SyntaxError, ValueError):
            return None

    @staticmethod
    def _changed_lines(source: str, s: int, e: int) -> str:
        first = source.rfind("\n", 0, s) + 1
        last = source.find("\n", max(e, s))
        text = source[first : last if last != -1 else len(source)]
        text = " ⏎ ".join(part.strip() for part in text.split("\n"))
        return text if len(text) <= 200 else text[:197] + "…"


def _is_prose(value: str) -> bool:
    """Three words or more, no regex metacharacters at the ends: a sentence for people."""
    return len(value.split()) >= 3 and not value.startswith("^") and not value.endswith("$")


def _label(text: str, width: int = 50) -> str:
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= width else text[: width - 4] + " …"


def find_mutants(path: str, source: str, prose: bool = False) -> tuple[list[Mutant], int, int, int]:
    finder = MutantFinder(path, source, prose)
    mutants = finder.mutants()
    return mutants, finder.invalid, finder.equivalent, finder.prose_skipped


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------

IGNORE_NAMES = {
    ".venv",
    "venv",
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".pyright",
    ".ruff_cache",
    ".hypothesis",
    "node_modules",
    ".tox",
    ".nox",
    "mutants",
    ".mutmut-cache",
    "build",
    "dist",
}


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n in IGNORE_NAMES or n.endswith((".pyc", ".pyo")) or n.endswith(".egg-info")}


@dataclass
class Plan:
    module: str  # relative path
    dotted: str
    tests: list[str]  # pytest args
    confirm_full: bool  # re-run survivors against the whole suite
    mutants: list[Mutant] = field(default_factory=list)
    total_found: int = 0
    invalid: int = 0
    equivalent: int = 0
    baseline_ok: bool = True


class Runner:
    def __init__(self, root: Path, python: str, jobs: int, timeout_factor: float, min_timeout: float) -> None:
        self.root = root
        self.python = python
        self.jobs = jobs
        self.timeout_factor = timeout_factor
        self.min_timeout = min_timeout
        self.base = Path()
        self.workers: queue.Queue[Path] = queue.Queue()
        self.baseline: dict[tuple[str, ...], float] = {}
        self.lock = threading.Lock()
        self.env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}
        self.env["PYTHONDONTWRITEBYTECODE"] = "1"  # no stale .pyc when a file changes within one second
        self.procs: set[subprocess.Popen] = set()
        self.stopping = threading.Event()

    def setup(self, rev: str | None = None) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="mutate-"))
        first = self.base / "w0"
        if rev:  # a committed revision: `git archive` only reads the repository
            first.mkdir()
            archive = subprocess.Popen(
                ["git", "-C", str(self.root), "archive", "--format=tar", rev], stdout=subprocess.PIPE
            )
            untar = subprocess.run(["tar", "-x", "-C", str(first)], stdin=archive.stdout)
            archive.stdout.close()  # type: ignore[union-attr]
            if archive.wait() or untar.returncode:
                raise SystemExit(f"mutate: git archive {rev} failed")
        else:
            shutil.copytree(self.root, first, ignore=_ignore, symlinks=True)
        for i in range(self.jobs):
            work = self.base / f"w{i}"
            if i:
                shutil.copytree(first, work, symlinks=True)
            (self.base / f"tmp{i}").mkdir()
            self.workers.put(work)

    def cleanup(self) -> None:
        if self.base != Path():
            shutil.rmtree(self.base, ignore_errors=True)

    def pytest_cmd(self, work: Path, tests: list[str]) -> list[str]:
        basetemp = self.base / ("tmp" + work.name[1:]) / "pytest"
        return [self.python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--basetemp={basetemp}", *tests]

    def run(self, cmd: list[str], cwd: Path, timeout: float | None) -> tuple[int | None, str, float]:
        started = time.monotonic()
        if self.stopping.is_set():
            return -1, "", 0.0
        proc = subprocess.Popen(
            cmd,
            cwd=cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        with self.lock:
            self.procs.add(proc)
        try:
            out, _ = proc.communicate(timeout=timeout)
            return proc.returncode, out, time.monotonic() - started
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return None, out, time.monotonic() - started
        finally:
            with self.lock:
                self.procs.discard(proc)

    def kill_all(self) -> None:
        self.stopping.set()
        with self.lock:
            for proc in list(self.procs):
                with contextlib.suppress(ProcessLookupError):  # it ended on its own
                    os.killpg(proc.pid, signal.SIGKILL)

    def check_isolation(self, plan: Plan) -> str | None:
        """The copy's module must be the one imported (not the shared tree's)."""
        work = self.base / "w0"
        code = f"import importlib; print(importlib.import_module({plan.dotted!r}).__file__)"
        rc, out, _ = self.run([self.python, "-c", code], work, 120)
        if rc != 0:
            return f"`import {plan.dotted}` fails in the clean copy:\n{out[-2000:]}"
        where = Path(out.strip().splitlines()[-1]).resolve()
        if where != (work / plan.module).resolve():
            return f"{plan.dotted} imports from {where}, not from the copy {work / plan.module}"
        return None

    def measure_baselines(self, commands: list[tuple[str, ...]], log) -> dict[tuple[str, ...], str | None]:
        failures: dict[tuple[str, ...], str | None] = {}

        def one(tests: tuple[str, ...]) -> None:
            work = self.workers.get()
            try:
                rc, out, secs = self.run(self.pytest_cmd(work, list(tests)), work, None)
            finally:
                self.workers.put(work)
            with self.lock:
                self.baseline[tests] = secs
                failures[tests] = None if rc == 0 else out[-3000:]
            log(f"baseline {secs:5.1f}s  rc={rc}  pytest {' '.join(tests) or '(whole suite)'}")

        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(one, commands))
        return failures

    def timeout_for(self, tests: list[str]) -> float:
        return max(self.timeout_factor * self.baseline[tuple(tests)], self.min_timeout)

    def test_mutant(self, plan: Plan, mutant: Mutant) -> None:
        work = self.workers.get()
        target = work / mutant.path
        original = target.read_bytes()
        started = time.monotonic()
        try:
            target.write_text(mutant.source, encoding="utf-8")
            rounds = [plan.tests] + ([[]] if plan.confirm_full else [])
            for tests in rounds:
                rc, out, _ = self.run(self.pytest_cmd(work, tests), work, self.timeout_for(tests))
                if self.stopping.is_set():
                    mutant.status = "pending"  # interrupted: not judged
                    break
                if rc is None:
                    mutant.status = "timeout"
                elif rc == 0:
                    mutant.status = "survived"
                    continue  # next round: the whole suite
                elif rc == 1:
                    mutant.status = "killed"
                    mutant.killed_by = _first_failure(out)
                else:  # collection error, usage error, internal error: is the module importable at all?
                    code = f"import importlib; importlib.import_module({plan.dotted!r})"
                    irc, iout, _ = self.run([self.python, "-c", code], work, self.timeout_for(tests))
                    if irc == 0:
                        mutant.status = "killed"
                        mutant.killed_by = _first_failure(out) or f"pytest exit {rc}"
                    else:
                        mutant.status = "not-importable"
                        mutant.killed_by = (iout.strip().splitlines() or ["?"])[-1][:200]
                break
        finally:
            target.write_bytes(original)
            self.workers.put(work)
            mutant.seconds = time.monotonic() - started


def _first_failure(output: str) -> str:
    for line in output.splitlines():
        if line.startswith(("FAILED ", "ERROR ")):
            return line.split(" - ")[0][:200]
    return ""


# --------------------------------------------------------------------------------------------
# Planning, reporting
# --------------------------------------------------------------------------------------------


def expand_modules(args: list[str], root: Path, snapshot: Path) -> list[str]:
    """Paths given relative to the current directory (or absolute, under root), listed in the snapshot."""
    found: list[str] = []
    for arg in args:
        path = Path(arg)
        path = (path if path.is_absolute() else Path.cwd() / path).resolve()
        try:
            path = snapshot / path.relative_to(root)
        except ValueError:
            print(f"mutate: {arg} is outside the project root {root} (skipped)", file=sys.stderr)
            continue
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
        elif path.is_file():
            files = [path]
        else:
            print(f"mutate: {arg}: no such file or directory (skipped)", file=sys.stderr)
            continue
        for f in files:
            rel = f.relative_to(snapshot).as_posix()
            if rel not in found:
                found.append(rel)
    return found


def dotted_name(relpath: str) -> str:
    parts = relpath[:-3].split("/")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def default_tests(root: Path, relpath: str) -> list[str]:
    """Test files that are about this module: test_<name>.py, test_<package>.py, files importing it."""
    tests_dir = root / "tests"
    if not tests_dir.is_dir():
        return []
    dotted = dotted_name(relpath)
    parts = dotted.split(".")
    names = {parts[-1]} | ({parts[-2]} if len(parts) > 1 and relpath.count("/") > 1 else set())
    if relpath.endswith("__init__.py"):
        names.add(parts[-1])
    patterns = [re.compile(r"\b" + re.escape(dotted) + r"\b")]
    if len(parts) > 1:
        parent, stem = ".".join(parts[:-1]), parts[-1]
        patterns.append(
            re.compile(r"from\s+" + re.escape(parent) + r"\s+import\s+(\([^)]*|[^\n]*)\b" + re.escape(stem) + r"\b")
        )
    chosen = []
    for test_file in sorted(tests_dir.rglob("test_*.py")):
        text = test_file.read_text(encoding="utf-8", errors="replace")
        if test_file.stem[len("test_") :] in names or any(p.search(text) for p in patterns):
            chosen.append(test_file.relative_to(root).as_posix())
    return chosen


def evenly(items: list, n: int) -> list:
    if n <= 0 or len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def summarize(plans: list[Plan]) -> list[dict]:
    rows = []
    for plan in plans:
        counts = {
            s: sum(1 for m in plan.mutants if m.status == s)
            for s in ("killed", "survived", "timeout", "not-importable", "pending")
        }
        judged = counts["killed"] + counts["survived"]
        times = [m.seconds for m in plan.mutants if m.status != "pending"]
        rows.append(
            {
                "module": plan.module,
                "mutants": len(plan.mutants),
                **counts,
                "score": (counts["killed"] / judged) if judged else None,
                "mean_s": statistics.mean(times) if times else 0.0,
                "median_s": statistics.median(times) if times else 0.0,
                "skipped": plan.invalid + plan.equivalent,
                "found": plan.total_found,
                "tests": " ".join(plan.tests) or "(whole suite)",
                "confirm": plan.confirm_full,
                "baseline_ok": plan.baseline_ok,
            }
        )
    return rows


def _code(text: str) -> str:
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def render(plans: list[Plan], rows: list[dict], wall: float, jobs: int, markdown: bool) -> str:
    out: list[str] = []
    score = lambda r: "n/a" if r["score"] is None else f"{100 * r['score']:.1f}%"  # noqa: E731
    if markdown:
        out.append("# Mutation report\n")
        out.append(
            f"Generated {datetime.datetime.now():%Y-%m-%d %H:%M} by `tools/mutate.py` "
            f"({jobs} jobs, {wall / 60:.1f} min wall). Score = killed / (killed + survived); "
            "timeouts and mutants that break the import are counted apart."
            + (
                f" Interrupted: {sum(r['pending'] for r in rows)} mutants not run."
                if any(r["pending"] and r["baseline_ok"] for r in rows)
                else ""
            )
            + "\n"
        )
        out.append("| module | mutants | killed | survived | timeout | not importable | score | s/mutant | tests |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|")
        for r in rows:
            tests = r["tests"] + (" → whole suite for survivors" if r["confirm"] else "")
            if not r["baseline_ok"]:
                tests += " **(baseline failed: not run)**"
            out.append(
                f"| `{r['module']}` | {r['mutants']} | {r['killed']} | {r['survived']} | {r['timeout']} | "
                f"{r['not-importable']} | {score(r)} | {r['mean_s']:.1f} | {tests} |"
            )
        for plan in plans:
            survivors = [m for m in plan.mutants if m.status == "survived"]
            out.append(f"\n## Survivors in `{plan.module}` ({len(survivors)})\n")
            for m in survivors:
                out.append(f"- `{m.path}:{m.line}:{m.col}` [{m.kind}] {m.description}  \n  {_code(m.mutated_line)}")
            others = [m for m in plan.mutants if m.status in ("timeout", "not-importable")]
            if others:
                out.append(f"\nTimeouts / not importable in `{plan.module}`:\n")
                for m in others:
                    out.append(
                        f"- `{m.path}:{m.line}:{m.col}` {m.status}: {m.description}  \n  {_code(m.mutated_line)}"
                    )
    else:
        out.append("")
        out.append(
            f"{'module':<44} {'mut':>4} {'kill':>5} {'surv':>5} {'t/o':>4} {'!imp':>5} {'score':>7} {'s/mut':>6}"
        )
        for r in rows:
            flag = "" if r["baseline_ok"] else "  (baseline failed: not run)"
            out.append(
                f"{r['module']:<44} {r['mutants']:>4} {r['killed']:>5} {r['survived']:>5} {r['timeout']:>4} "
                f"{r['not-importable']:>5} {score(r):>7} {r['mean_s']:>6.1f}{flag}"
            )
        not_run = sum(r["pending"] for r in rows if r["baseline_ok"])
        out.append(
            f"wall time {wall:.0f}s with {jobs} jobs"
            + (f"; {not_run} mutants not run (interrupted)" if not_run else "")
        )
        for plan in plans:
            survivors = [m for m in plan.mutants if m.status == "survived"]
            if survivors:
                out.append(f"\nSurvivors in {plan.module} ({len(survivors)}):")
                for m in survivors:
                    out.append(f"  {m.path}:{m.line}:{m.col}  [{m.kind}] {m.description}\n      {m.mutated_line}")
            for m in plan.mutants:
                if m.status in ("timeout", "not-importable"):
                    out.append(f"  {m.status}: {m.path}:{m.line}:{m.col} {m.description}\n      {m.mutated_line}")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("modules", nargs="+", help="module files or directories (expanded to their .py files)")
    parser.add_argument(
        "--tests",
        help='pytest args for every module, e.g. "tests/test_costs.py" (default: the '
        "test files mentioning each module, survivors confirmed on the whole suite; "
        "'all' = the whole suite)",
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument("--report", help="also write a markdown report here")
    parser.add_argument("--limit", type=int, default=0, help="at most N mutants per module, evenly spread")
    parser.add_argument("--root", default=".", help="project root to copy (default: the current directory)")
    parser.add_argument("--python", help="interpreter for the tests (default: ROOT/.venv/bin/python)")
    parser.add_argument("--timeout-factor", type=float, default=3.0, help="timeout = factor × clean run (default 3)")
    parser.add_argument("--min-timeout", type=float, default=10.0, help="lower bound of the timeout, seconds")
    parser.add_argument(
        "--prose", action="store_true", help="also mutate strings of three words or more (descriptions, messages)"
    )
    parser.add_argument(
        "--rev",
        help="test a committed revision (git archive REV) instead of the working tree, "
        "e.g. HEAD while others are editing",
    )
    parser.add_argument("--dry-run", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--keep", action="store_true", help="keep the temp copies (for debugging)")
    args = parser.parse_args(argv)

    root = Path(args.root).resolve()
    python = args.python or str(root / ".venv" / "bin" / "python")
    if not Path(python).exists():
        python = sys.executable

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    runner = Runner(root, python, max(1, args.jobs), args.timeout_factor, args.min_timeout)

    def interrupted(signum, frame):  # SIGTERM too: stop the running tests, clean up, report what ran
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    started = time.monotonic()
    plans: list[Plan] = []
    try:
        snapshot = root
        if not args.dry_run or args.rev:
            runner.setup(args.rev)
            snapshot = runner.base / "w0"
            log(
                f"copied {root}{' at ' + args.rev if args.rev else ''} to {runner.base}/w0..w{runner.jobs - 1} "
                "(tests run there; the tree is only read)"
            )
        modules = expand_modules(args.modules, root, snapshot)
        if not modules:
            log("mutate: no modules to mutate")
        for module in modules:
            source = (snapshot / module).read_text(encoding="utf-8")
            mutants, invalid, equivalent, prose = find_mutants(module, source, args.prose)
            if args.tests is None:
                tests, confirm = default_tests(snapshot, module), True
                confirm = bool(tests)  # no focused tests → whole suite at once
            elif args.tests.strip() in ("all", ""):
                tests, confirm = [], False
            else:
                tests, confirm = shlex.split(args.tests), False
            plan = Plan(
                module,
                dotted_name(module),
                tests,
                confirm,
                evenly(mutants, args.limit),
                len(mutants),
                invalid,
                equivalent,
            )
            if mutants:
                plans.append(plan)
            log(
                f"{module}: {len(mutants)} mutants ({invalid} invalid, {equivalent} equivalent dropped, "
                f"{prose} prose strings left alone)"
                + (f", running {len(plan.mutants)}" if args.limit else "")
                + f"; tests: {' '.join(tests) or '(whole suite)'}"
                + (" then whole suite for survivors" if confirm else "")
            )

        if args.dry_run:
            for plan in plans:
                for m in plan.mutants:
                    print(f"{m.path}:{m.line}:{m.col}  [{m.kind}] {m.description}\n    {m.mutated_line}")
            return 0

        for plan in plans:
            if not plan.mutants:
                continue
            problem = runner.check_isolation(plan)
            if problem:
                log(f"mutate: {problem}")
                plan.baseline_ok = False
        judged = [p for p in plans if p.baseline_ok and p.mutants]
        commands = sorted({tuple(p.tests) for p in judged} | ({()} if any(p.confirm_full for p in judged) else set()))
        failures = runner.measure_baselines(commands, log)
        for plan in plans:
            for tests in [plan.tests] + ([[]] if plan.confirm_full else []):
                failure = failures.get(tuple(tests))
                if plan.baseline_ok and failure:
                    log(
                        f"mutate: the clean run of pytest {' '.join(tests) or '(whole suite)'} fails; "
                        f"{plan.module} is not judged:\n{failure}"
                    )
                    plan.baseline_ok = False

        work = [(p, m) for p in plans if p.baseline_ok for m in p.mutants]
        done = 0

        def one(item: tuple[Plan, Mutant]) -> None:
            nonlocal done
            plan, mutant = item
            runner.test_mutant(plan, mutant)
            with runner.lock:
                done += 1
                log(
                    f"[{done}/{len(work)}] {mutant.status.upper():<14} {mutant.seconds:5.1f}s  "
                    f"{mutant.path}:{mutant.line}  {mutant.description}"
                )

        pool = ThreadPoolExecutor(runner.jobs)
        try:
            for future in [pool.submit(one, item) for item in work]:
                future.result()
        except KeyboardInterrupt:
            runner.kill_all()
            pool.shutdown(wait=False, cancel_futures=True)
            runner.kill_all()
            pool.shutdown(wait=True)
            raise
        pool.shutdown()
    except KeyboardInterrupt:
        runner.kill_all()
        log("interrupted: reporting what ran")
    finally:
        if not args.keep:
            runner.cleanup()
        elif args.keep:
            log(f"kept {runner.base}")

    wall = time.monotonic() - started
    rows = summarize(plans)
    print(render(plans, rows, wall, runner.jobs, markdown=False))
    if args.report:
        Path(args.report).write_text(render(plans, rows, wall, runner.jobs, markdown=True), encoding="utf-8")
        log(f"report written to {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
