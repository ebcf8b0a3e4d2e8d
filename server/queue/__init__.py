"""The queue: runs' jobs in per-function ready sets, leased fairly, with expiring leases."""

from server.queue.queue import Enqueued, NewRun, Queue

__all__ = ["Enqueued", "NewRun", "Queue"]
