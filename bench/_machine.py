"""What every benchmark's JSON says about the code and the machine it ran on."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from redis.utils import HIREDIS_AVAILABLE

ROOT = Path(__file__).resolve().parents[1]


def git_sha() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def machine_facts() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "git_sha": git_sha(),
        # With hiredis, redis-py parses replies in C.
        "hiredis": HIREDIS_AVAILABLE,
        # Other load on the machine skews every figure; this shows it was there.
        "loadavg_1m_at_start": round(os.getloadavg()[0], 2),
    }
