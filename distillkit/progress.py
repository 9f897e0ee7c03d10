"""Progress of long loops: a bar on a terminal, periodic log lines elsewhere (nohup, SLURM, CI).

``DISTILLKIT_PROGRESS`` picks the display: ``auto`` (default: the bar when stderr is a terminal,
log lines otherwise), ``bar``/``1`` (always the bar), ``log`` (always log lines) or ``0`` (nothing).
Log lines are rate-limited per loop to one every ``DISTILLKIT_PROGRESS_SECONDS`` (default 60), so a
300-epoch evaluation loop of two minutes writes two lines and a loop shorter than that writes none.
"""

from __future__ import annotations

import logging
import os
import sys
import time

from tqdm.auto import tqdm

from distillkit.errors import UserError

log = logging.getLogger("distillkit")

MODES = ("auto", "bar", "1", "log", "0")


class LoggedProgress:
    """Iterates ``iterable`` and logs ``desc: done/total (elapsed, ETA) postfix`` at most every ``interval`` s."""

    def __init__(self, iterable, desc: str, total: int | None, interval: float):
        self.iterable, self.desc, self.interval = iterable, desc, interval
        self.total = total if total is not None else getattr(iterable, "__len__", lambda: None)()
        self.postfix = ""

    def set_postfix_str(self, text: str) -> None:
        """The loop's own report (as on tqdm's bar), appended to the next log line."""
        self.postfix = text

    def __iter__(self):
        start = last = time.monotonic()
        for done, item in enumerate(self.iterable):
            now = time.monotonic()
            if done and now - last >= self.interval:
                last = now
                log.info("%s", self.line(done, now - start))
            yield item

    def line(self, done: int, elapsed: float) -> str:
        shown = f"{self.desc}: {done}" + (f"/{self.total}" if self.total else "") + f" ({elapsed:.0f} s"
        if self.total:
            shown += f", about {elapsed / done * (self.total - done):.0f} s left"
        return shown + ")" + (f", {self.postfix}" if self.postfix else "")


def progress(iterable, desc: str = "", leave: bool = True, total: int | None = None):
    """The display of the loop over ``iterable`` that ``DISTILLKIT_PROGRESS`` asks for (module docstring)."""
    mode = os.environ.get("DISTILLKIT_PROGRESS", "auto")
    if mode not in MODES:
        raise UserError(f"DISTILLKIT_PROGRESS must be one of {', '.join(MODES)} (got '{mode}')")
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "log"
    if mode == "log":
        return LoggedProgress(iterable, desc, total, interval_seconds())
    return tqdm(iterable, desc=desc, leave=leave, total=total, disable=mode == "0", dynamic_ncols=True)


def interval_seconds() -> float:
    text = os.environ.get("DISTILLKIT_PROGRESS_SECONDS", "60")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise UserError(f"DISTILLKIT_PROGRESS_SECONDS must be a number of seconds >= 0 (got '{text}')")
    return seconds
