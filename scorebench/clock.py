"""Seconds since this process started: the start-up cost of a job (interpreter, imports, data,
model) up to its real work, which is what small jobs of a study pay for and `bench/study.py` reads
from the job logs."""

from __future__ import annotations

import os


def since_process_start() -> float | None:
    """Wall seconds since the process was created (Linux /proc), or None where that is unknown."""
    try:
        with open(f"/proc/{os.getpid()}/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22: start time after boot
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])  # seconds since boot, 10 ms resolution
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))


def log_ready(logger, what: str) -> None:
    """One log line `ready: <what> after X.XX s since process start` (bench/study.py parses it)."""
    seconds = since_process_start()
    if seconds is not None:
        logger.info("ready: %s after %.2f s since process start", what, seconds)
