"""heap.keep_freed_memory: freed CPU tensors are reused instead of faulted in again (glibc only)."""

import json
import subprocess
import sys

import pytest

from scorebench.heap import heap_state, keep_freed_memory

# Counts the minor page faults of "steps" that hold eight 2 MiB tensors and free them, before and
# after tuning, in 5 rounds of 5 steps. By default glibc trims the freed heap top back to the OS, so in
# most runs (it depends on where the heap lands) every step faults its pages in again: ~20,000
# faults a round; with the heap kept, the steps after the first round reuse them and fault none.
PROBE = """
import json, resource, torch
torch.set_num_threads(1)  # no thread pool starting up inside the measured loop
from scorebench.heap import keep_freed_memory

def step():  # a training step's pattern: activations held together, then all freed
    held = [torch.ones(1 << 19) for _ in range(8)]
    del held

def faults():
    step()  # warm-up: the first blocks are faulted in either way
    rounds = []
    for _ in range(5):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(5):
            step()
        rounds.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return rounds

default = faults()
state = keep_freed_memory()
print(json.dumps({"default": default, "state": state, "kept": faults()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc settings")
def test_kept_heap_stops_page_faults_of_repeated_allocations():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["state"] == "kept"
    assert max(r["default"]) > 500, r  # the probe sees glibc's default faulting (every round, in most runs)
    assert max(r["kept"][1:]) < 50, r  # tuned: after the first round, the steps reuse their pages


def test_state_is_recorded_and_idempotent():
    first = keep_freed_memory()
    assert keep_freed_memory() == first == heap_state()
    assert first in ("kept", "default")


def test_device_description_records_heap_state():
    from scorebench.device import device_description

    assert device_description("cpu")["heap"] == heap_state()
