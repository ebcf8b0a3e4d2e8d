"""Keeps every message pushed to a worker under the size it accepts.

A job carries as many of its run's memoised steps as fit; the others are listed in
`fetch_steps` for the worker to read through `StateService.GetSteps`. Jobs are packed into as
few `jobs` messages as the limit allows. Sizes are protobuf's wire sizes, computed from the
field lengths so that no message is serialised twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from plait_proto.v1 import queue_pb2

# What an old worker (max_receive_message_bytes = 0) accepts: the Python SDK's limit.
DEFAULT_WORKER_LIMIT = 8 * 1024 * 1024
# The least a worker may announce: a job must hold its event and the step ids it leaves out.
MIN_WORKER_LIMIT = 1024 * 1024
# Room for the ConnectResponse and Jobs wrappers around one job, and some to spare.
_WRAPPER_BYTES = 64


class Undeliverable(Exception):
    """The job cannot reach the worker within its limit, even with every memo left out."""


def _varint_len(n: int) -> int:
    size = 1
    while n >= 0x80:
        n >>= 7
        size += 1
    return size


def _field_len(payload: int) -> int:
    """A length-delimited field with a one-byte tag (field numbers 1..15)."""
    return 1 + _varint_len(payload) + payload


def step_entry_len(step_id: str, memo: bytes) -> int:
    """The bytes one `map<string, bytes>` entry (field 1..15) adds to its message."""
    key = len(step_id.encode())
    return _field_len(_field_len(key) + _field_len(len(memo)))


def _fetch_entry_len(step_id: str) -> int:
    return _field_len(len(step_id.encode()))


def fit_steps(job: queue_pb2.Job, steps: Mapping[str, bytes], limit: int,
              can_fetch: bool) -> queue_pb2.Job:
    """`job` with the memos that fit under `limit` in `steps` and the rest named in
    `fetch_steps`; the smallest go first, so the fewest are left out. `job.steps` is replaced
    (it may already hold `steps`).

    Raises Undeliverable when the job cannot be sent: its event alone is too large, a memo
    left out is too large for any one message (GetSteps could not return it either), or the
    worker cannot fetch (`can_fetch` False) and not every memo fits.
    """
    budget = limit - _WRAPPER_BYTES
    # The usual case, sized by protobuf itself: every memo fits.
    if len(job.steps) != len(steps):
        job.steps.update(steps)
    total = job.ByteSize()
    if total <= budget:
        return job
    job.ClearField("steps")
    base = job.ByteSize()
    entries = sorted(((step_entry_len(k, v), k) for k, v in steps.items()),
                     key=lambda e: (e[0], e[1]))
    if not can_fetch:
        raise Undeliverable(
            f"the job is {total} bytes with its memoised steps, over the worker's limit of "
            f"{limit} bytes, and its SDK cannot fetch steps (it announced no "
            "max_receive_message_bytes)")
    room = budget - base - sum(_fetch_entry_len(k) for _, k in entries)
    if room < 0:
        raise Undeliverable(
            f"the job's event and step ids take {budget - room} bytes, over the worker's limit "
            f"of {limit} bytes (max_receive_message_bytes)")
    left_out: list[str] = []
    for size, step_id in entries:
        cost = size - _fetch_entry_len(step_id)
        if cost <= room:
            job.steps[step_id] = steps[step_id]
            room -= cost
            continue
        if size > budget:
            raise Undeliverable(
                f"step {step_id!r} has a memoised output of {len(steps[step_id])} bytes, over "
                f"the worker's limit of {limit} bytes per message (max_receive_message_bytes)")
        left_out.append(step_id)
    job.fetch_steps.extend(left_out)
    return job


def pack(jobs: Iterable[queue_pb2.Job], limit: int) -> list[list[queue_pb2.Job]]:
    """The jobs in order, split into batches whose `jobs` message stays under `limit`."""
    budget = limit - _WRAPPER_BYTES
    batches: list[list[queue_pb2.Job]] = []
    batch: list[queue_pb2.Job] = []
    used = 0
    for job in jobs:
        size = _field_len(job.ByteSize())
        if batch and used + size > budget:
            batches.append(batch)
            batch, used = [], 0
        batch.append(job)
        used += size
    if batch:
        batches.append(batch)
    return batches


__all__ = ["DEFAULT_WORKER_LIMIT", "MIN_WORKER_LIMIT", "Undeliverable", "fit_steps", "pack",
           "step_entry_len"]
