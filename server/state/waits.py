"""Wait entries: runs waiting for an event (wait-for-event, invoke, cancel-on), and the index
that lets the runner find the ones an event matches without reading every waiting run.

An entry lives in the shard's `waits:<event name>` hash under a field naming the run and
the step (or cancel-on rule). An `if` of the form `event.<path> == async.<path>` (either
order) or `async.<path> == <literal>` is *indexed*: the value it needs is known when the
wait is made (from the run's event, or the literal), so the entry's field goes into the
set `waitidx:<name>:<async path>:<digest of the value>`, and an event finds it by reading
that path of itself. Any other `if` (or none) puts the field in `waitscan:<name>`, which
every event of that name reads and evaluates. The shard's `waitpaths:<name>` set lists
the async paths in use, so an event knows which of its values to look up. A run's
`waitrefs` hash (field -> "<waits key> <set key>") lets its end remove what it left.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from server.keys import ShardKeys

WAIT = "wait"  # wait for event: the memo is the event, or null at the timeout
INVOKE = "invoke"  # invoke: the memo is the child's output or error, or a timeout error
CANCEL = "cancel"  # cancel-on: the run is cancelled

_PATH = r"((?:\.[A-Za-z_][A-Za-z0-9_]*)+)"
_SIDE = re.compile(rf"^\s*(event|async){_PATH}\s*==\s*(event|async){_PATH}\s*$")
_LITERAL = re.compile(
    rf"""^\s*(?:async{_PATH}\s*==\s*(?P<lit1>'[^'\\]*'|"[^"\\]*"|-?\d+|true|false)"""
    rf"""|(?P<lit2>'[^'\\]*'|"[^"\\]*"|-?\d+|true|false)\s*==\s*async{_PATH})\s*$"""
)
_MISSING = object()


@dataclass(frozen=True, slots=True)
class IndexRule:
    """How an `if` is indexed: the awaited event's `async_path` must equal a value taken from
    the run's event at `event_path`, or `literal` (JSON) when there is no event path."""

    async_path: str
    event_path: str = ""
    literal: str = ""


def index_rule(if_expression: str) -> IndexRule | None:
    """The index rule of an `if`, or None when it must be evaluated for every event."""
    m = _SIDE.match(if_expression)
    if m:
        left, lpath, right, rpath = m.groups()
        if {left, right} != {"event", "async"}:
            return None
        event_path, async_path = (lpath, rpath) if left == "event" else (rpath, lpath)
        return IndexRule(async_path=async_path[1:], event_path=event_path[1:])
    m = _LITERAL.match(if_expression)
    if m:
        path = m.group(1) or m.group(4)
        lit = m.group("lit1") or m.group("lit2")
        if lit[0] in "'\"":
            return IndexRule(async_path=path[1:], literal=json.dumps(lit[1:-1]))
        return IndexRule(async_path=path[1:], literal=lit)
    return None


def lookup(value: Any, path: str) -> Any:
    """`value` at a dotted path of object keys; `_MISSING` when any key is absent."""
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return _MISSING
        value = value[key]
    return value


def digest(value: Any) -> str:
    """A short stable digest of a JSON value; 1 and 1.0 are one value, as CEL compares them."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def event_digest(event: Any, path: str) -> str | None:
    """The digest of an incoming event's value at `path`, None when it has none (no match)."""
    value = lookup(event, path)
    if value is _MISSING or isinstance(value, dict | list) or value is None:
        return None
    return digest(value)


@dataclass(frozen=True, slots=True)
class NewWait:
    """A wait entry to store, with the keys it goes under."""

    waits_key: str
    field: str
    set_key: str  # the index set or the scan set holding `field`
    paths_key: str
    async_path: str  # "" when scanned
    entry_json: str

    def lua_args(self) -> list[str]:
        return [self.waits_key, self.field, self.set_key, self.paths_key, self.async_path,
                self.entry_json]


def new_wait(
    sk: ShardKeys, *, kind: str, event_name: str, run_id: str, field: str, step_id: str,
    function_id: str, if_expression: str, until_ms: int, run_event: Any, step_name: str = "",
    job_id: str = "",
) -> NewWait:
    """The entry of a wait made now, indexed when its `if` allows (see the module doc).
    `job_id` names the waiting job when it is not the run's main job (a planned step's job,
    `<run>:<step>`, for a wait or invoke in a parallel group)."""
    rule = index_rule(if_expression) if if_expression else None
    value: Any = _MISSING
    if rule is not None:
        value = json.loads(rule.literal) if rule.literal else lookup(run_event, rule.event_path)
    if rule is not None and value is not _MISSING and not isinstance(value, dict | list) \
            and value is not None:
        set_key, path = sk.wait_index(event_name, rule.async_path, digest(value)), rule.async_path
    else:
        # Not indexable, or it cannot match (the run's event lacks the value): evaluated.
        set_key, path = sk.wait_scan(event_name), ""
    entry = {"kind": kind, "run": run_id, "step": step_id, "name": step_name or step_id,
             "fn": function_id, "if": if_expression, "until": until_ms, "set": set_key}
    if job_id and job_id != run_id:
        entry["job"] = job_id
    return NewWait(sk.waits(event_name), field, set_key, sk.wait_paths(event_name), path,
                   json.dumps(entry, separators=(",", ":")))


@dataclass(frozen=True, slots=True)
class WaitEntry:
    """One stored wait (a field of the shard's waits hash of `event`)."""

    event: str
    field: str
    kind: str
    run_id: str
    step_id: str
    function_id: str
    if_expression: str
    until_ms: int
    set_key: str
    step_name: str = ""
    job_id: str = ""  # the waiting job: the run's main job when empty

    @classmethod
    def parse(cls, event: str, field: str, raw: bytes | str) -> WaitEntry:
        d = json.loads(raw)
        step = str(d.get("step", ""))
        return cls(event, field, str(d.get("kind") or WAIT), str(d.get("run") or field),
                   step, str(d["fn"]), str(d.get("if") or ""), int(d["until"]),
                   str(d.get("set", "")), str(d.get("name") or step), str(d.get("job") or ""))


def step_field(run_id: str, step_id: str) -> str:
    return f"{run_id}/{step_id}"


def cancel_field(run_id: str, index: int) -> str:
    return f"{run_id}/cancel:{index}"


__all__ = [
    "CANCEL",
    "INVOKE",
    "WAIT",
    "IndexRule",
    "NewWait",
    "WaitEntry",
    "cancel_field",
    "digest",
    "event_digest",
    "index_rule",
    "lookup",
    "new_wait",
    "step_field",
]
