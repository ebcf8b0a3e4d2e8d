"""`plait_runs_waiting{function_id,reason}`: the runs each reason holds, kept by the scripts
that set and clear `why` (lease, cancel), read at scrape by probe_queues."""

from __future__ import annotations

from redis.asyncio import Redis

from server.telemetry.metrics import Metrics, probe_queues
from server.types import ConcurrencyLimit, DebounceConfig, FlowControl, RunCompleted
from tests.queue.flow_support import NOW, function, make_flow, run_of


async def test_the_gauge_counts_held_runs_by_reason_until_they_lease_or_end(
        redis: Redis) -> None:
    flow = make_flow(redis)
    limited = function("limited", FlowControl(concurrency=(ConcurrencyLimit(1),)))
    debounced = function("debounced", FlowControl(debounce=DebounceConfig(period_ms=1000)))
    runs = [run_of(limited, {"n": i}, at=NOW + i) for i in range(3)]
    await flow.queue.enqueue_runs([*runs, run_of(debounced)], NOW)
    (job,) = await flow.lease(limited)

    async def waiting() -> dict[tuple[str, str], int]:
        samples, _ = await probe_queues(redis, flow.keys, ["limited", "debounced"], NOW)
        return {(s.function_id, r): n for s in samples for r, n in s.waiting if n}

    assert await waiting() == {("limited", "concurrency"): 2, ("debounced", "debounce"): 1}
    await flow.state.cancel_run(runs[2].run_id, NOW + 1)
    assert await waiting() == {("limited", "concurrency"): 1, ("debounced", "debounce"): 1}
    await flow.state.apply([(job, RunCompleted(b"1"))], NOW + 2, relock=False)
    assert len(await flow.lease(limited, debounced, now=NOW + 1000)) == 2
    assert await waiting() == {}
    samples, leased = await probe_queues(redis, flow.keys, ["limited"], NOW)
    metrics = Metrics()
    metrics.set_queues(samples, leased, NOW)
    assert b"plait_runs_waiting" in metrics.render()
