"""One exception type for mistakes a user can fix.

The command line prints a `ScorebenchError` as a single line (no traceback) and exits non-zero,
so every message must name the field or file at fault and say what would be valid.
"""


class ScorebenchError(Exception):
    """A user-facing error: bad config value, impossible cell, corrupt file, non-finite loss."""


class Preempted(ScorebenchError):
    """Training stopped on a signal (a SLURM time-limit warning, scancel, preemption) after writing
    its resume checkpoint: rerunning the same job continues from there instead of starting over."""
