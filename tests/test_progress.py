import io

from robgan_tf import progress as progress_lib


def test_progress_line_counts_notes_elapsed_and_eta(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(progress_lib.time, "time", lambda: now[0])
    out = io.StringIO()  # not a terminal: one line per print
    p = progress_lib.Progress("autoattack apgd-t", 4, stream=out, every=10.0)
    p.note(left=120)
    now[0] += 30
    p.update(1)  # first update always prints: 30 s for 1 of 4 -> 90 s to go
    assert out.getvalue() == "autoattack apgd-t: 1/4 batches, 120 examples left, 0m30s elapsed, ETA 1m30s\n"
    now[0] += 5
    p.update(1)  # within `every` seconds of the last line: silent
    assert out.getvalue().count("\n") == 1
    now[0] += 3700
    p.update(2)  # the last unit always prints, without an ETA
    assert out.getvalue().splitlines()[-1] == "autoattack apgd-t: 4/4 batches, 120 examples left, 1h02m15s elapsed"


def test_disabled_progress_prints_nothing():
    out = io.StringIO()
    p = progress_lib.Progress("x", 2, stream=out, enabled=False)
    p.update(2)
    p.close()
    assert out.getvalue() == ""
