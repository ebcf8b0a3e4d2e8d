"""The SDK's public surface is exactly this list; growing it is a decision, not an accident."""

import plait


def test_the_sdk_exports_exactly_its_public_names() -> None:
    assert plait.__all__ == [
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


def test_every_exported_name_belongs_to_the_plait_package() -> None:
    for name in plait.__all__:
        assert getattr(plait, name).__module__.startswith("plait."), name
