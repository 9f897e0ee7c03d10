"""Progress bars for long loops: shown on a terminal, silent in logs and tests."""

from __future__ import annotations

import os

from tqdm.auto import tqdm


def progress(iterable, desc: str = "", leave: bool = True, total: int | None = None):
    """tqdm on stderr when it is a terminal (or DISTILLKIT_PROGRESS=1); DISTILLKIT_PROGRESS=0 hides it."""
    setting = os.environ.get("DISTILLKIT_PROGRESS", "auto")
    disable = None if setting == "auto" else setting == "0"
    return tqdm(iterable, desc=desc, leave=leave, total=total, disable=disable, dynamic_ncols=True)
