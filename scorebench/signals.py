"""Preemption as a request, not a crash: SIGTERM/SIGUSR1 stop a long job after its current unit of work.

SLURM sends SIGTERM on `scancel`, on preemption and at the time limit, and the signal chosen with
`sbatch --signal` (e.g. USR1) as an earlier warning. Training (after a step) and sampling (after a
chunk) poll `requested`, write what they have and stop with `Preempted`, so the rerun that SLURM's
requeue or Snakemake's retries start loses no work.
"""

from __future__ import annotations

import signal
import threading

# Signals that ask a run to checkpoint and stop: SLURM sends SIGTERM on scancel, preemption and at
# the time limit, and the signal chosen with `sbatch --signal` (e.g. USR1) as an earlier warning.
STOP_SIGNALS = ("SIGUSR1", "SIGTERM")


class StopOnSignal:
    """Turns SIGUSR1/SIGTERM into a request to stop after the current step (`install`/`restore`,
    or use it as a context manager).

    A handler only records the signal (stopping mid-step could leave the model, the EMA and the
    optimiser out of step); the loop polls `requested` once per step. Python delivers signals to
    the main thread only, so elsewhere nothing is installed. The previous handlers come back on exit.
    """

    def __init__(self, names=STOP_SIGNALS):
        self.names = names
        self.signum: int | None = None
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    def _record(self, signum, frame) -> None:
        if self.signum is None:
            self.signum = signum

    def install(self) -> "StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for name in self.names:
                sig = getattr(signal, name, None)  # SIGUSR1 does not exist on Windows
                if sig is not None:
                    self._previous[sig] = signal.signal(sig, self._record)
        return self

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            # None: the old handler was not set from Python; the default is the closest match
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
        self._previous.clear()

    def __enter__(self) -> "StopOnSignal":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
