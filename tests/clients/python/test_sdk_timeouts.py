"""`timeouts=Timeouts(...)` on a function: checked when declared, sent in milliseconds."""

from __future__ import annotations

from typing import Any

import pytest
from plait import App, Context, Step, Timeouts, TriggerEvent
from plait._convert import function_to_pb


async def _noop(ctx: Context, step: Step) -> None:
    return None


def test_timeouts_are_sent_in_milliseconds() -> None:
    app = App("shop")
    app.function("pay", trigger=TriggerEvent("shop/pay"),
                 timeouts=Timeouts(start_s=10, finish_s=1.5))(_noop)
    (spec,) = app._specs()
    definition = function_to_pb(spec)
    assert definition.timeouts.start_ms == 10_000
    assert definition.timeouts.finish_ms == 1_500


def test_a_function_without_timeouts_sends_none() -> None:
    app = App("shop")
    app.function("pay", trigger=TriggerEvent("shop/pay"))(_noop)
    (spec,) = app._specs()
    assert not function_to_pb(spec).HasField("timeouts")


@pytest.mark.parametrize("timeouts", [Timeouts(start_s=0), Timeouts(finish_s=-1),
                                      Timeouts(start_s="1s")])  # type: ignore[arg-type]
def test_a_timeout_that_is_not_a_positive_number_is_refused(timeouts: Any) -> None:
    with pytest.raises(ValueError, match="timeouts"):
        App("shop").function("pay", trigger=TriggerEvent("shop/pay"), timeouts=timeouts)
