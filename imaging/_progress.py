"""The progress bars of the library: tqdm, off unless asked for, and quiet in logs."""
from __future__ import annotations

import sys

from tqdm.auto import tqdm


def progress_bar(iterable=None, *, enabled: bool, **options) -> tqdm:
    """A tqdm bar (disabled unless `enabled`, not left behind when done). When stderr is not a terminal (a log file,
    CI, a pipe) it redraws at most every 30 s, so that a long run does not flood the log with bar updates."""
    interactive = hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
    options.setdefault("mininterval", 0.1 if interactive else 30.0)
    options.setdefault("leave", False)
    return tqdm(iterable, disable=not enabled, **options)
