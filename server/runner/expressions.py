"""CEL expressions of triggers, waits and cancel-on rules: compiled once at registration with a
cost budget, and evaluated per event only while the event keeps them inside it.

The CEL library (`common-expression-language`, Rust) has no cost limit, gives no parse tree and
holds the GIL while it evaluates, so the loop is protected by a static estimate: a lexical pass
measures how deeply comprehension macros nest, how many there are, how large the literal lists
are and how many tokens one iteration evaluates. The work of an evaluation is at most
`tokens * n ** depth`, times n again for an `in` inside a loop and times s for a string search
(`contains`, `matches`) inside one, where n is the longest list or map it can meet and s the
longest string: refused at registration when the literals alone pass the budget, and checked
against the event's data before each evaluation.
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
# Calls whose work grows with the string they search: inside a comprehension, a factor of the
# longest string. (`startsWith` and `endsWith` cost the length of their argument.)
_STRING_SEARCHES = frozenset({"contains", "matches"})
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
    tokens: int = 0
    literal_items: int = 0  # largest list or map literal
    literal_chars: int = 0  # longest string literal
    list_search: bool = False  # an `in` inside a comprehension
    string_search: bool = False  # a `contains` or `matches` inside a comprehension

    def units(self, n: int, s: int) -> int:
        """Work of one evaluation whose data's longest collection has `n` items and longest
        string `s` characters."""
        if self.depth == 0:
            return self.tokens
        n = max(n, self.literal_items, 1)
        s = max(s, self.literal_chars, 1)
        return (self.tokens * int(n ** self.depth) * (n if self.list_search else 1)
                * (s if self.string_search else 1))


@dataclass(frozen=True, slots=True)
class Expression:
    """A compiled expression and its measured cost."""
    source: str
    program: Any  # cel.Program
    cost: Cost


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
    depth = deepest = comprehensions = tokens = literal_items = literal_chars = 0
    list_search = string_search = False
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
            literal_chars = max(literal_chars, length)
            previous, pending_macro = "0", False
            continue
        if kind == "id":
            called = source[i:].lstrip().startswith("(")
            if text in _MACROS and previous == "." and called:
                pending_macro = True
            elif depth and text == "in":
                list_search = True
            elif depth and text in _STRING_SEARCHES and called:
                string_search = True
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
    return Cost(comprehensions, deepest, tokens, literal_items, literal_chars, list_search,
                string_search)


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
    if cost.units(0, 0) > COST_BUDGET:
        raise InvalidArgument(
            field, f"is too costly to evaluate: about {cost.units(0, 0)} units of work per "
            f"event from its literals alone, over the budget of {COST_BUDGET}")
    return Expression(source, program, cost)


def within_budget(expression: Expression, variables: dict[str, Any]) -> bool:
    """Whether evaluating `expression` over `variables` stays within the budget: the data is
    walked without recursion for its longest collection (and string, when the expression
    searches strings), stopping as soon as the work would pass the budget."""
    cost = expression.cost
    if cost.depth == 0:
        return True
    strings = cost.string_search
    walked: tuple[type, ...] = (dict, list, str) if strings else (dict, list)
    n = s = 0
    pending: list[Any] = [variables]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if len(item) <= s:
                continue
            s = len(item)
        else:
            if isinstance(item, dict):
                values: Any = item.values()
                if strings:
                    pending.extend(k for k in item if isinstance(k, str))
            else:
                values = item
            pending.extend(v for v in values if isinstance(v, walked))
            if len(item) <= n:
                continue
            n = len(item)
        if cost.units(n, s) > COST_BUDGET:
            return False
    return True


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
