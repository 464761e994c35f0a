"""One writer per training folder: a job holds an exclusive lock on it for as long as it trains.

Why: after a hard kill of Snakemake (SIGKILL, a lost login session) its jobs keep running, and a
rerun submits the same cell again. Two processes then resumed from one checkpoint and appended to
one train_log.jsonl (269 and 277 records for 150 steps), and the run still exited 0. With the lock
the second job stops at once with one line naming the first (host, pid, SLURM job) and what to do.

The lock is `flock` on a file in the folder: the kernel drops it when its process dies, however it
dies, so a killed job never leaves a stale lock behind (on NFS, Linux maps flock to NFS locks, which
work across nodes). The file also records who holds it, for the message. On a file system without
locks (e.g. Lustre mounted without `flock`) the job warns and trains unguarded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from scorebench.errors import ScorebenchError

log = logging.getLogger("scorebench")

LOCK_NAME = ".scorebench.lock"
_UNSUPPORTED = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


def holder_record() -> dict:
    """Who this process is: host, pid, SLURM job (if any) and since when."""
    record = {"host": socket.gethostname(), "pid": os.getpid(), "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
    if os.environ.get("SLURM_JOB_ID"):
        record["slurm_job"] = os.environ["SLURM_JOB_ID"]
    return record


def describe(record: dict) -> str:
    """"SLURM job 12 (pid 345 on node1, since ...)", or what is known of a holder that wrote nothing yet."""
    if not record:
        return "a job that has not recorded itself yet"
    where = f"pid {record.get('pid', '?')} on {record.get('host', '?')}, since {record.get('since', '?')}"
    if record.get("slurm_job"):
        return f"SLURM job {record['slurm_job']} ({where})"
    return where


def _stop_hint(record: dict) -> str:
    if record.get("slurm_job"):
        return f"Wait for it (`squeue -j {record['slurm_job']}`) or cancel it (`scancel {record['slurm_job']}`)"
    if record.get("pid"):
        return f"Wait for it or stop it (`kill {record['pid']}` on {record.get('host', 'its host')})"
    return "Wait for it or stop it"


def _read_record(fd: int) -> dict:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        return json.loads(text) if text.strip() else {}
    except (OSError, ValueError):
        return {}


@contextlib.contextmanager
def exclusive(folder, *, what: str):
    """Hold the folder's lock for the `with` block, or refuse at once if another process holds it.

    Args:
        folder: the folder the job writes (created if needed); the lock file lives in it.
        what: the job, for the message ("training of cell mix/geom/dsm/seed0").

    Raises:
        ScorebenchError: another live process holds the lock; the message names it and what to do.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                holder = _read_record(fd)
                os.close(fd)
                raise ScorebenchError(
                    f"{what}: {folder} is being written by another job, {describe(holder)}; this duplicate stops "
                    f"without touching it. {_stop_hint(holder)}, then rerun"
                ) from None
            os.close(fd)
            if exc.errno not in _UNSUPPORTED:
                raise
            log.warning("cannot lock %s (%s): a duplicate job for this folder would not be detected", path, exc)
            yield
            return
        try:  # the holder before us removes the file on release: make sure we locked the file that is there
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder_record()).encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        os.close(fd)
