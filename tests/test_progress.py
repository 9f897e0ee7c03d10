"""Progress of long loops: a bar on a terminal, rate-limited log lines elsewhere, nothing when asked."""

from __future__ import annotations

import logging

import pytest

from distillkit.errors import UserError
from distillkit.progress import LoggedProgress, progress


def logged_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "distillkit"]


def test_log_mode_reports_done_total_time_left_and_the_loops_postfix(monkeypatch, caplog):
    monkeypatch.setenv("DISTILLKIT_PROGRESS", "log")
    monkeypatch.setenv("DISTILLKIT_PROGRESS_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="distillkit")
    loop = progress(range(4), desc="distil")
    seen = []
    for item in loop:
        seen.append(item)
        loop.set_postfix_str(f"loss {item}")
    assert seen == [0, 1, 2, 3]
    lines = logged_lines(caplog)
    assert len(lines) == 3  # before items 1, 2 and 3: nothing is reported before anything is done
    assert lines[0].startswith("distil: 1/4 (") and "s left" in lines[0] and lines[0].endswith(", loss 0")
    assert lines[-1].startswith("distil: 3/4 (") and lines[-1].endswith(", loss 2")


def test_log_lines_are_rate_limited(monkeypatch, caplog):
    monkeypatch.setenv("DISTILLKIT_PROGRESS", "log")
    monkeypatch.setenv("DISTILLKIT_PROGRESS_SECONDS", "3600")
    caplog.set_level(logging.INFO, logger="distillkit")
    assert list(progress(range(1000), desc="eval")) == list(range(1000))
    assert logged_lines(caplog) == []


def test_a_loop_without_length_is_reported_without_total(monkeypatch, caplog):
    monkeypatch.setenv("DISTILLKIT_PROGRESS_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="distillkit")
    list(LoggedProgress((x for x in "abc"), "pool", None, 0.0))
    assert logged_lines(caplog)[0].startswith("pool: 1 (") and "left" not in logged_lines(caplog)[0]


def test_auto_logs_without_a_terminal_and_zero_shows_nothing(monkeypatch, caplog):
    monkeypatch.setenv("DISTILLKIT_PROGRESS", "auto")
    assert isinstance(progress(range(3)), LoggedProgress)  # pytest's stderr is not a terminal
    monkeypatch.setenv("DISTILLKIT_PROGRESS", "0")
    monkeypatch.setenv("DISTILLKIT_PROGRESS_SECONDS", "0")
    caplog.set_level(logging.INFO, logger="distillkit")
    assert list(progress(range(3))) == [0, 1, 2] and logged_lines(caplog) == []


@pytest.mark.parametrize("variable, value", [("DISTILLKIT_PROGRESS", "loud"), ("DISTILLKIT_PROGRESS_SECONDS", "soon"),
                                             ("DISTILLKIT_PROGRESS_SECONDS", "-1")])
def test_bad_settings_are_one_line_user_errors(monkeypatch, variable, value):
    monkeypatch.setenv("DISTILLKIT_PROGRESS", "log")
    monkeypatch.setenv(variable, value)
    with pytest.raises(UserError, match=variable):
        progress(range(3))
