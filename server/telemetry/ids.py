"""Trace and span ids derived from run ids, and W3C `traceparent` values.

A run's spans are emitted by whichever process sees each part end, across restarts, so no
span can be held open in memory: every id is a hash of the run id (and of the lease that a
step attempt ran under), and any process computes the same trace and parents.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

__all__ = [
    "SpanKind",
    "TraceParent",
    "format_traceparent",
    "parse_traceparent",
    "span_id",
    "span_id_hex",
    "trace_id",
    "trace_id_hex",
]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")


class SpanKind:
    """What a span stands for; also the `kind` column of the spans table."""

    RUN = "run"  # the root: the run from creation to its end
    QUEUE = "queue"  # a job waiting, runnable, until it was leased
    STEP = "step"  # one attempt: a job from its lease to its committed outcome
    SLEEP = "sleep"  # a sleep step, from when it was reached to when the run wakes
    DISPATCH = "dispatch"  # a job on its way to a worker or app and back (per process)


# Where each kind's id sits in the digest of a lease: one hash gives all of a lease's spans.
_SLOT = {SpanKind.STEP: 0, SpanKind.QUEUE: 8, SpanKind.DISPATCH: 16, SpanKind.SLEEP: 24}


def _id(digest: bytes, at: int, size: int) -> int:
    return int.from_bytes(digest[at:at + size], "big") or 1  # zero is invalid in W3C


@functools.lru_cache(maxsize=1 << 14)
def _run_ids(run_id: str) -> tuple[int, int]:
    digest = hashlib.blake2b(f"plait/run/{run_id}".encode(), digest_size=24).digest()
    return _id(digest, 0, 16), _id(digest, 16, 8)


@functools.lru_cache(maxsize=1 << 14)
def _lease_digest(run_id: str, lease_id: str) -> bytes:
    return hashlib.blake2b(f"plait/lease/{run_id}/{lease_id}".encode(), digest_size=32).digest()


def trace_id(run_id: str) -> int:
    """The 128-bit trace id of a run."""
    return _run_ids(run_id)[0]


def span_id(run_id: str, kind: str, lease_id: str = "") -> int:
    """The 64-bit id of a run's span: the root (kind run) or one per lease for the others."""
    if kind == SpanKind.RUN:
        return _run_ids(run_id)[1]
    return _id(_lease_digest(run_id, lease_id), _SLOT[kind], 8)


def trace_id_hex(run_id: str) -> str:
    return f"{trace_id(run_id):032x}"


def span_id_hex(run_id: str, kind: str, lease_id: str = "") -> str:
    return f"{span_id(run_id, kind, lease_id):016x}"


def format_traceparent(trace: int, span: int, sampled: bool) -> str:
    return f"00-{trace:032x}-{span:016x}-{'01' if sampled else '00'}"


@dataclass(frozen=True, slots=True)
class TraceParent:
    trace_id: int
    span_id: int
    sampled: bool

    def __str__(self) -> str:
        return format_traceparent(self.trace_id, self.span_id, self.sampled)


def parse_traceparent(value: str) -> TraceParent | None:
    """A W3C traceparent header, or None when it is not a valid one (which is then ignored)."""
    match = _TRACEPARENT.match(value.strip().lower()) if value else None
    if match is None:
        return None
    version, trace, span, flags, rest = match.groups()
    # Version ff is invalid; version 00 has nothing after the flags; later ones may.
    if version == "ff" or (version == "00" and rest):
        return None
    trace_int, span_int = int(trace, 16), int(span, 16)
    if trace_int == 0 or span_int == 0:
        return None
    return TraceParent(trace_int, span_int, bool(int(flags, 16) & 1))
