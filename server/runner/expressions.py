"""CEL expressions of triggers, waits and cancel-on rules: compiled once at registration with a
cost budget, and evaluated per event only while the event keeps them inside it.

The CEL library (`common-expression-language`, Rust) has no cost limit, gives no parse tree and
holds the GIL while it evaluates, so the loop is protected by a static estimate: a lexical pass
measures how deeply comprehension macros nest, how many there are, how large the literal lists
are and how many tokens one iteration evaluates. The work of an evaluation is at most
`tokens * n ** loops`, where n is the longest list, map (or string, for string searches) it can
iterate: refused at registration when the literals alone pass the budget, and checked against
the event's data before each evaluation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import cel
import structlog
from croniter import croniter

from server.errors import InvalidArgument

log = structlog.get_logger(__name__)

MAX_EXPRESSION_BYTES = 4096
# A comprehension inside a comprehension is allowed; one more level is refused.
MAX_COMPREHENSION_DEPTH = 2
MAX_COMPREHENSIONS = 8
# Units of work (a token evaluated once): about 50 ns each, so the budget is a few ms.
COST_BUDGET = 100_000

_MACROS = frozenset({"all", "exists", "exists_one", "existsOne", "map", "filter"})
# Operations whose own work grows with an operand (a list for `in`, a string for the rest):
# inside a comprehension they are one more loop.
_STRING_SEARCHES = frozenset({"contains", "matches", "startsWith", "endsWith"})
_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>(?:[rR][bB]?|[bB][rR]?)?(?:\"\"\"|'''|"|'))
  | (?P<num>0[xX][0-9a-fA-F]+[uU]?|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?[uU]?)
  | (?P<id>[A-Za-z_]\w*)
  | (?P<op>&&|\|\||==|!=|<=|>=|.)
""", re.VERBOSE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Cost:
    """What a lexical pass over an expression found."""
    comprehensions: int = 0
    depth: int = 0  # deepest nesting of comprehension macros
    loops: int = 0  # depth, plus one where an `in` or a string search runs inside a macro
    tokens: int = 0
    literal_items: int = 0  # largest list or map literal (or string literal, for searches)
    searches_strings: bool = False

    def units(self, n: int) -> int:
        """Work of one evaluation whose data's longest collection has `n` items."""
        if self.loops == 0:
            return self.tokens
        return self.tokens * int(max(n, self.literal_items, 1) ** self.loops)

    def largest_n(self) -> int:
        """The longest collection an evaluation may meet within the budget."""
        if self.loops == 0:
            return -1
        n = int((COST_BUDGET / max(self.tokens, 1)) ** (1 / self.loops))
        while n > 0 and self.units(n) > COST_BUDGET:
            n -= 1
        while self.units(n + 1) <= COST_BUDGET:
            n += 1
        return n


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression and its measured cost."""
    source: str
    program: Any  # cel.Program
    cost: Cost
    # The longest collection its data may hold (-1: no loops, any data is fine).
    limit: int = -1


def _string_end(source: str, start: int, quote: str, raw: bool) -> tuple[int, int]:
    """Index after the literal whose body starts at `start`, and the body's length."""
    i = start
    while i < len(source):
        if source.startswith(quote, i):
            return i + len(quote), i - start
        i += 2 if source[i] == "\\" and not raw else 1
    return len(source), len(source) - start


def measure(source: str) -> Cost:
    """Counts what drives an evaluation's work, skipping string literals (a string holding
    `.all(` is no loop). Conservative: any list literal may be what a macro iterates."""
    stack: list[list[Any]] = []  # [kind, commas, non_empty]: kind "m" macro, "(", "[", "{", "i"
    depth = deepest = comprehensions = loops = tokens = literal_items = strings = 0
    searches_strings = False
    previous = ""  # the last significant token ("0" for a literal or a name)
    pending_macro = False
    i = 0
    while i < len(source):
        m = _TOKEN.match(source, i)
        assert m is not None  # the last alternative matches any character
        kind, text, i = m.lastgroup, m.group(), m.end()
        if kind == "ws":
            continue
        tokens += 1
        if stack and text not in ",)]}":
            stack[-1][2] = True
        if kind == "str":
            quote = text.lstrip("rRbB")
            i, length = _string_end(source, i, quote, "r" in text[: -len(quote)].lower())
            strings = max(strings, length)
            previous, pending_macro = "0", False
            continue
        if kind == "id":
            called = source[i:].lstrip().startswith("(")
            if text in _MACROS and previous == "." and called:
                pending_macro = True
            elif text == "in" or (text in _STRING_SEARCHES and called):
                searches_strings = searches_strings or text != "in"
                if depth:
                    loops = max(loops, depth + 1)
            previous = "0" if text != "in" else "in"
            continue
        if text == "(":
            stack.append(["m" if pending_macro else "(", 0, False])
            if pending_macro:
                comprehensions += 1
                depth += 1
                deepest = max(deepest, depth)
        elif text in "[{":
            # `a[0]` indexes; a `[` after an operator or at the start opens a list literal.
            literal = text == "{" or previous not in (")", "]", "0")
            stack.append([text if literal else "i", 0, False])
        elif text in ")]}" and stack:
            closed, commas, non_empty = stack.pop()
            if closed in "[{":
                literal_items = max(literal_items, commas + 1 if non_empty else 0)
            depth -= closed == "m"
        elif text == "," and stack:
            stack[-1][1] += 1
        pending_macro = False
        previous = text if kind == "op" else "0"
    if searches_strings:
        literal_items = max(literal_items, strings)
    return Cost(comprehensions, deepest, max(loops, deepest), tokens, literal_items,
                searches_strings)


def compile_expression(field: str, source: str) -> Expression:
    """Compiles a CEL expression within the cost budget; a syntax error or a costly expression
    is an InvalidArgument naming the field."""
    if len(source.encode()) > MAX_EXPRESSION_BYTES:
        raise InvalidArgument(field, f"longer than {MAX_EXPRESSION_BYTES} bytes")
    try:
        program = cel.compile(source)
    except ValueError as e:
        first = str(e).splitlines()[0] if str(e) else "syntax error"
        raise InvalidArgument(field, f"invalid CEL expression: {first}") from None
    cost = measure(source)
    if cost.depth > MAX_COMPREHENSION_DEPTH:
        raise InvalidArgument(
            field, f"nests comprehensions (all, exists, exists_one, map, filter) {cost.depth} "
            f"deep; at most {MAX_COMPREHENSION_DEPTH} are allowed")
    if cost.comprehensions > MAX_COMPREHENSIONS:
        raise InvalidArgument(
            field, f"has {cost.comprehensions} comprehensions (all, exists, exists_one, map, "
            f"filter); at most {MAX_COMPREHENSIONS} are allowed")
    if cost.units(0) > COST_BUDGET:
        raise InvalidArgument(
            field, f"is too costly to evaluate: about {cost.units(0)} units of work per event "
            f"from its literals alone, over the budget of {COST_BUDGET}")
    return Expression(source, program, cost, cost.largest_n())


def _longest(value: Any, limit: int, strings: bool) -> int:
    """The longest list or map in `value` (strings too when `strings`), walked without
    recursion; stops as soon as one is longer than `limit`."""
    walked: tuple[type, ...] = (dict, list, str) if strings else (dict, list)
    longest = 0
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            longest = max(longest, len(item))
            pending.extend(v for v in item.values() if isinstance(v, walked))
            if strings:
                pending.extend(k for k in item if isinstance(k, str))
        elif isinstance(item, list):
            longest = max(longest, len(item))
            pending.extend(v for v in item if isinstance(v, walked))
        elif strings and isinstance(item, str):
            longest = max(longest, len(item))
        if longest > limit:
            break
    return longest


def within_budget(expression: Expression, variables: dict[str, Any]) -> bool:
    """Whether evaluating `expression` over `variables` stays within the budget."""
    if expression.limit < 0:
        return True
    return (_longest(variables, expression.limit, expression.cost.searches_strings)
            <= expression.limit)


def matches(expression: Expression, variables: dict[str, Any]) -> bool:
    """True when the expression holds; an evaluation error (missing field) is a non-match, and
    so is data that would take the expression past its budget (it is not evaluated)."""
    if not within_budget(expression, variables):
        log.warning("expression.over_budget", expression=expression.source[:200],
                    budget=COST_BUDGET)
        return False
    try:
        return expression.program.execute(variables) is True
    except Exception:
        return False


def validate_cron(field: str, spec: str) -> None:
    """Accepts five-field cron, descriptors (@hourly …) and an optional TZ=/CRON_TZ= prefix."""
    expr = spec.strip()
    if expr.startswith(("TZ=", "CRON_TZ=")):
        tz, _, expr = expr.partition(" ")
        zone = tz.split("=", 1)[1]
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(zone)
        except Exception:
            raise InvalidArgument(field, f"unknown time zone {zone!r}") from None
    fields = expr.split()
    if not expr.startswith("@") and len(fields) != 5:
        raise InvalidArgument(field, f"cron {spec!r} must have 5 fields")
    if not croniter.is_valid(expr):
        raise InvalidArgument(field, f"invalid cron expression {spec!r}")
    try:  # valid fields can still name a date that never comes (`0 0 30 2 *`)
        croniter(expr, datetime.now(UTC)).get_next(datetime)
    except Exception:
        raise InvalidArgument(field, f"cron {spec!r} never fires: no date matches it") from None
