"""Progress: plain lines when not on a terminal, a tqdm bar on one, nothing when quiet."""

from __future__ import annotations

import io

from amalgam.training.progress import Bar, Console, bar_for


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_at_quarter_marks_off_terminal():
    out = io.StringIO()
    bar = Console(stream=out).bar(8, "epoch 1/2")
    for _ in range(8):
        bar.update(1, loss=0.5)
    bar.close()
    lines = out.getvalue().splitlines()
    assert [ln.split(":")[1].split()[0] for ln in lines] == ["2/8", "4/8", "6/8"]
    assert all("loss 0.5" in ln and "eta" in ln for ln in lines)


def test_tqdm_bar_on_a_terminal_and_silence_when_quiet():
    term = Terminal()
    bar = Console(stream=term).bar(4, "eval scenes")
    for _ in range(4):
        bar.update(1, img_s=12.0)
    bar.close()
    assert "eval scenes" in term.getvalue() and "\r" in term.getvalue()
    quiet = io.StringIO()
    bar = Console(quiet=True, stream=quiet).bar(4, "x")
    for _ in range(4):
        bar.update(1)
    Console(quiet=True, stream=quiet)("hello")
    assert quiet.getvalue() == ""


def test_plain_callables_get_a_silent_bar():
    seen = []
    bar = bar_for(seen.append, 4, "x")
    assert isinstance(bar, Bar)
    for _ in range(4):
        bar.update(1)
    assert seen == []


def test_steps_skipped_on_resume_do_not_count_in_the_pace(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("amalgam.training.progress.time.perf_counter", lambda: clock[0])
    out = io.StringIO()
    bar = Console(stream=out).bar(8, "epoch 2/3")
    bar.skip(4)  # done before the stop; not in this process's time
    clock[0] += 10.0
    bar.update(2)  # 2 steps in 10 s: the last 2 steps take 10 s more
    assert out.getvalue().split(":")[1].split() == ["6/8", "eta", "10s"]
