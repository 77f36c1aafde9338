"""kulit.progress: one tqdm bar on a terminal, nothing in a log."""

from __future__ import annotations

import io

import pytest

from kulit.progress import progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_no_bar_without_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert progress_bar("checking images") is None


def test_a_bar_per_count_and_a_new_one_when_the_count_starts_again(
        monkeypatch: pytest.MonkeyPatch) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    show = progress_bar("checking images", "image")
    assert show is not None
    for i in range(1, 4):
        show(i, 3)
    for i in range(1, 3):  # the next folder
        show(i, 2)
    text = screen.getvalue()
    assert "checking images" in text and "3/3" in text and "2/2" in text


def test_in_a_log_a_line_per_log_every_items(monkeypatch: pytest.MonkeyPatch) -> None:
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    show = progress_bar("predicting", log_every=2)
    assert show is not None
    for i in range(1, 6):
        show(i, 5)
    assert [line.split(",")[0] for line in log.getvalue().splitlines()] == [
        "2/5 photos", "4/5 photos", "5/5 photos"]
