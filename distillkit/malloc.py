"""glibc's malloc set up for PyTorch on the CPU, once per process (``import distillkit`` does it).

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh ``mmap`` and gives it back
with ``munmap`` when freed, so a training step that allocates its large activations anew touches fresh pages
each time: one minor page fault per 4 KiB page, in the kernel. ConvNet-3 at batch 128 on 28×28 images spent a
third of its CPU time there (docs/results.md, "The allocator"). Serving every allocation from the heap
(``M_MMAP_MAX`` 0) and keeping up to ``TRIM_THRESHOLD`` of freed memory at its top reuses the same pages, as
PyTorch's CUDA caching allocator does on a GPU. It changes no number, only where memory comes from; the price is
that the process keeps its peak heap until it exits. ``DISTILLKIT_MALLOC=system`` leaves glibc's defaults, and
other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
TRIM_THRESHOLD = 2**31 - 1  # free heap kept at its top before it is returned to the system: mallopt's largest, 2 GiB
CHOICES = ("tuned", "system")


def tune_malloc() -> str:
    """Apply the setting ``DISTILLKIT_MALLOC`` asks for (default ``tuned``); returns what the process runs with:
    ``tuned``, ``system`` (asked for, or not glibc), or ``system`` when glibc refused a parameter."""
    wanted = os.environ.get("DISTILLKIT_MALLOC", "tuned")
    if wanted not in CHOICES:
        print(f"distillkit: DISTILLKIT_MALLOC={wanted!r} is not one of {', '.join(CHOICES)}; using glibc's defaults",
              file=sys.stderr)
        return "system"
    if wanted == "system" or not sys.platform.startswith("linux"):
        return "system"
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt accepts nothing
    except (OSError, AttributeError):
        return "system"
    applied = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    return "tuned" if applied else "system"


MALLOC = tune_malloc()  # what this process runs with; results.json records it beside the device
