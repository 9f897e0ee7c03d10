"""``import distillkit`` sets glibc's malloc up so that large tensors freed and allocated again reuse their pages
(``distillkit/malloc.py``): far fewer page faults, the same numbers; ``DISTILLKIT_MALLOC=system`` opts out."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")

# A child process: import distillkit, then allocate, fill and free a 64 MiB tensor 30 times (above glibc's
# largest mmap threshold, as a ConvNet's activations at batch 128 are); prints the setting, the page faults of
# the last 10 rounds (the heap has settled by then) and a checksum of what was computed.
CHILD = """
import resource, torch
from distillkit.malloc import MALLOC
total = 0.0
for i in range(30):
    if i == 20:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = torch.full((16 * 1024 * 1024,), float(i))
    total += float(block[::4096].sum())
    del block
print(MALLOC, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, total)
"""


def child(setting: str | None) -> tuple[str, int, float, str]:
    env = {k: v for k, v in os.environ.items() if k != "DISTILLKIT_MALLOC"}
    if setting is not None:
        env["DISTILLKIT_MALLOC"] = setting
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, check=True)
    malloc, faults, total = done.stdout.split()
    return malloc, int(faults), float(total), done.stderr


def test_tuned_malloc_reuses_freed_pages_and_changes_no_number():
    tuned, tuned_faults, tuned_total, _ = child(None)
    system, system_faults, system_total, _ = child("system")
    assert (tuned, system) == ("tuned", "system")
    pages = 64 * 1024 * 1024 // 4096
    assert system_faults > 9 * pages  # every round maps fresh pages: 10 × 16 384 faults
    assert tuned_faults < pages  # the heap's pages, reused
    assert tuned_total == system_total


def test_an_unknown_setting_is_one_line_and_keeps_glibcs_defaults():
    malloc, _, _, stderr = child("fast")
    assert malloc == "system"
    assert stderr.strip() == "distillkit: DISTILLKIT_MALLOC='fast' is not one of tuned, system; using glibc's defaults"
