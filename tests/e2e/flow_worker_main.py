"""A worker process for the flow-control kill tests:
`python -m tests.e2e.flow_worker_main TARGET RECORD_FILE`.

Its function `flowkill-keyed` allows 2 runs at once per `event.data.k`; each body appends its
interval (tests/e2e/flow_support.py) to RECORD_FILE, so the test sees executions across
processes and restarts.
"""

from __future__ import annotations

import sys
from pathlib import Path

from plait import App, Concurrency, Context, Step, TriggerEvent, Worker

from tests.e2e.flow_support import Recorder

APP_ID = "flowkill"
FUNCTION_ID = f"{APP_ID}-keyed"
EVENT = "flowkill/go"
LIMIT = 2
BODY_S = 0.1


def main(target: str, record: Path) -> None:

    app = App(APP_ID)
    recorder = Recorder(record)

    @app.function("keyed", trigger=TriggerEvent(EVENT), retries=0,
                  concurrency=Concurrency(limit=LIMIT, key="event.data.k"))
    async def keyed(ctx: Context, step: Step) -> None:
        await recorder.hold(ctx.run_id, ctx.event.data["k"], BODY_S)

    Worker(app, server=target, max_concurrent_jobs=40, shutdown_grace_s=1).run()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
