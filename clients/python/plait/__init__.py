"""Plait's Python worker SDK: declare durable functions on an `App`, serve them with a `Worker`."""

from plait._app import App
from plait._context import Context
from plait._errors import NonRetriableError, RetryAfterError, StepError
from plait._flow import Batch, Concurrency, Debounce, RateLimit, Singleton, Throttle
from plait._messages import CancelOn, SendEvent, Timeouts
from plait._step import Step, SyncStep
from plait._triggers import TriggerCron, TriggerEvent
from plait._version import __version__ as __version__
from plait._worker import Worker

__all__ = [
    "App",
    "Batch",
    "CancelOn",
    "Concurrency",
    "Context",
    "Debounce",
    "NonRetriableError",
    "RateLimit",
    "RetryAfterError",
    "SendEvent",
    "Singleton",
    "Step",
    "StepError",
    "SyncStep",
    "Throttle",
    "Timeouts",
    "TriggerCron",
    "TriggerEvent",
    "Worker",
]
