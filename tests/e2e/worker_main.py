"""A worker process for the kill tests: `python -m tests.e2e.worker_main TARGET MARKS_DIR`.

Its step bodies append a line to MARKS_DIR/marks (run id, step, pid), so the test can count
executions across processes; while MARKS_DIR/block exists the first step blocks.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from plait import App, Context, SyncStep, TriggerEvent, Worker

app = App("kill")
MARKS = Path(sys.argv[2]) if len(sys.argv) > 2 else Path(".")


def _mark(run_id: str, step: str) -> None:
    with (MARKS / "marks").open("a") as f:
        f.write(f"{run_id} {step} {os.getpid()}\n")


@app.function("slow", trigger=TriggerEvent("kill/slow"))
def slow(ctx: Context, step: SyncStep) -> dict[str, str]:
    def first() -> str:
        _mark(ctx.run_id, "first")
        while (MARKS / "block").exists():
            time.sleep(0.05)  # a long step body, killed from outside
        return "one"

    a = step.run("first", first)
    b = step.run("second", lambda: (_mark(ctx.run_id, "second"), "two")[1])
    return {"a": a, "b": b}


if __name__ == "__main__":
    Worker(app, server=sys.argv[1], max_concurrent_jobs=4, shutdown_grace_s=1).run()
