"""A one-line progress display for evaluations that run for minutes (attacks, IS / FID, the gap analysis).

Written to stderr, like tqdm, so stdout keeps only results: on a terminal one line is rewritten in place; in
a log file a line is added at most every `every` seconds. Nothing is printed when disabled.
"""
from __future__ import annotations

import sys
import time


def _clock(seconds):
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """Progress of `total` units (batches, images): done / total, extra notes (e.g. examples left),
    elapsed time and the ETA extrapolated from the rate so far."""

    def __init__(self, label, total, *, unit="batches", enabled=True, stream=None, every=5.0):
        self.label, self.total, self.unit, self.enabled = label, int(total), unit, enabled
        self.stream = stream if stream is not None else sys.stderr
        self.every = every
        self.done, self.notes = 0, {}
        self.start = time.time()
        self._last = None
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def note(self, **values):
        """Values shown after the count, e.g. note(left=120) -> '120 examples left'."""
        self.notes.update(values)

    def update(self, n=1):
        self.done += n
        now = time.time()
        if self._last is None or now - self._last >= self.every or self.done >= self.total:
            self._print(now)

    def line(self, now=None):
        elapsed = (now or time.time()) - self.start
        parts = [f"{self.label}: {self.done}/{self.total} {self.unit}"]
        if "left" in self.notes:
            parts.append(f"{self.notes['left']} examples left")
        parts.extend(f"{k} {v}" for k, v in self.notes.items() if k != "left")
        parts.append(f"{_clock(elapsed)} elapsed")
        if 0 < self.done < self.total:
            parts.append(f"ETA {_clock(elapsed / self.done * (self.total - self.done))}")
        return ", ".join(parts)

    def _print(self, now):
        self._last = now
        if not self.enabled:
            return
        if self._tty:
            self.stream.write("\r\033[K" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self):
        if self.enabled and self._tty and self._last is not None:
            self.stream.write("\n")
            self.stream.flush()
