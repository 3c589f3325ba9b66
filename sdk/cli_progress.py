"""Progress on stderr for the command line: stage names, tile counts, elapsed time.

One object serves every command. It takes :class:`hccatom.progress_events.ProgressEvent`-like
events (``stage``, ``done``, ``total``, ``elapsed_s``, optional ``detail``) from the Predictor
and the DICOM study index (files read, series found), and wraps other steps with
:meth:`StderrProgress.stage`. Levels:

* ``quiet``: nothing (errors are still printed by the CLI);
* ``normal``: on a terminal a live status line (stages running now, tiles done/total, elapsed
  time, redrawn every second) and one line per finished stage that took 0.5 s or more;
  elsewhere (a log file, CI) plain lines: a finished stage, tile counts every quarter, and a
  "still running" line whenever nothing was printed for :attr:`heartbeat_s` seconds, so a
  long run is never silent;
* ``verbose``: every stage's start and end as plain lines, whatever their duration.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, TextIO

Level = Literal["quiet", "normal", "verbose"]


@dataclass
class _Active:
    started: float
    done: int = 0
    total: int = 0
    quarter: int = 0
    detail: str = ""


def _unit(stage: str) -> str:
    if stage.startswith("segment"):
        return "tiles"
    if stage == "index_study":
        return "files"
    return "models" if stage.endswith("models") else ""


def _counted(act: _Active, stage: str, *, progress: bool) -> str:
    """``" 3/27 tiles"`` (``progress``) or ``" 27 tiles"``, then ``", detail"``; or ``""``."""
    count = ""
    if act.total > 1:
        count = (f" {act.done}/{act.total}" if progress else f" {act.total}")
        count = f"{count} {_unit(stage)}".rstrip()
    return count + (f", {act.detail}" if act.detail else "")


class StderrProgress:
    """Shows what the user is waiting for (see the module docstring); thread-safe."""

    def __init__(self, stream: TextIO, level: Level = "normal", *,
                 tty: bool | None = None, heartbeat_s: float = 10.0,
                 min_shown_s: float = 0.5, redraw_s: float = 0.1) -> None:
        self.stream = stream
        self.level = level
        self.tty = bool(getattr(stream, "isatty", lambda: False)()) if tty is None else tty
        self.heartbeat_s = heartbeat_s
        self.min_shown_s = min_shown_s
        self.redraw_s = redraw_s
        self._lock = threading.Lock()
        self._active: dict[str, _Active] = {}
        self._last_write = time.monotonic()
        self._last_draw = 0.0
        self._line_open = False
        self._detail = ""
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # --- events --------------------------------------------------------------------------
    def __call__(self, event: Any) -> None:
        """A Predictor progress event: 0 of 1 starts a stage, 1 of 1 ends it, and
        ``done`` of ``total`` > 1 in between counts (tiles, files); ``detail`` is shown
        beside the count."""
        self.update(event.stage, int(event.done), int(event.total),
                    str(getattr(event, "detail", "") or ""))

    def update(self, stage: str, done: int, total: int, detail: str = "") -> None:
        """Record ``done`` of ``total`` for ``stage``: starts it if new, ends it at 1 of 1;
        ``detail`` (e.g. ``"3 series"``) replaces the stage's previous one."""
        if self.level == "quiet":
            return
        with self._lock:
            now = time.monotonic()
            act = self._active.get(stage)
            if act is None:
                act = self._active[stage] = _Active(now)
                self._ensure_heartbeat()
                if self.level == "verbose":
                    self._line(f"{stage} ...")
            if total > 1:
                act.done, act.total = done, total
            if detail:
                act.detail = detail
            if total == 1 and done >= 1:
                self._finish(stage, act, now)
            elif total > 1:
                self._count(stage, act, now)
            elif self.tty:
                self._draw(now)

    @contextmanager
    def stage(self, name: str) -> Iterator[Callable[[int, int], None]]:
        """Wrap a step: shows it while it runs; the yielded ``tick(done, total)`` counts."""
        self.update(name, 0, 1)
        finished = False
        try:
            yield lambda done, total: self.update(name, done, total) if total > 1 else None
            finished = True
        finally:  # a step that raised is not "done": its error follows this line
            with self._lock:
                act = self._active.get(name)
                if act is not None and self.level != "quiet":
                    self._finish(name, act, time.monotonic(), failed=not finished)

    def note(self, text: str) -> None:
        """A plain progress line (e.g. a build step's own report); nothing when quiet."""
        if self.level == "quiet":
            return
        with self._lock:
            self._line(text)

    def live(self, text: str) -> None:
        """On a terminal, show ``text`` (e.g. cases done and ETA) in the live line, redrawn
        in place; ``""`` removes it. Elsewhere nothing: callers write plain lines by
        :meth:`note`."""
        if self.level == "quiet" or not self.tty:
            return
        with self._lock:
            self._detail = text
            self._draw(time.monotonic())

    def close(self) -> None:
        """Stop the heartbeat and clear the live line."""
        self._stop.set()
        with self._lock:
            self._clear()

    # --- drawing (lock held) --------------------------------------------------------------
    def _finish(self, stage: str, act: _Active, now: float, *, failed: bool = False) -> None:
        self._active.pop(stage, None)
        elapsed = now - act.started
        if self.level == "verbose" or elapsed >= self.min_shown_s or act.total > 1:
            if failed:
                self._line(f"{stage} failed after {elapsed:.1f} s")
                return
            count = _counted(act, stage, progress=False).lstrip(", ")
            self._line(f"{stage} done{(': ' + count) if count else ''} in {elapsed:.1f} s")
        elif self.tty:
            self._draw(now)

    def _count(self, stage: str, act: _Active, now: float) -> None:
        if self.tty:
            self._draw(now)
            return
        quarter = (4 * act.done) // max(act.total, 1)
        if quarter > act.quarter and act.done < act.total:
            act.quarter = quarter
            self._line(f"{stage}{_counted(act, stage, progress=True)} "
                       f"{now - act.started:.1f} s")

    def _status(self, now: float) -> str:
        parts = []
        for stage, act in self._active.items():
            parts.append(f"{stage}{_counted(act, stage, progress=True)} "
                         f"{now - act.started:.1f} s")
        if self._detail:
            parts.append(self._detail)
        return " | ".join(parts)

    def _draw(self, now: float, force: bool = False) -> None:
        if not self._active or (not force and now - self._last_draw < self.redraw_s):
            return
        self._last_draw = now
        self._write(f"\r\x1b[Khccatom: {self._status(now)}")
        self._line_open = True

    def _clear(self) -> None:
        if self._line_open:
            self._write("\r\x1b[K")
            self._line_open = False

    def _line(self, text: str) -> None:
        self._clear()
        self._write(f"hccatom: {text}\n")
        if self.tty:
            self._draw(time.monotonic(), force=True)

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: progress is never worth a crash
            self.level = "quiet"
        self._last_write = time.monotonic()

    # --- heartbeat --------------------------------------------------------------------------
    def _ensure_heartbeat(self) -> None:
        if self._beat is None:
            self._beat = threading.Thread(target=self._heartbeat, name="hccatom-progress",
                                          daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.heartbeat_s)):
            with self._lock:
                now = time.monotonic()
                if not self._active or self.level == "quiet":
                    continue
                if self.tty:  # the live line's clock keeps moving during one long step
                    self._draw(now, force=True)
                elif now - self._last_write >= self.heartbeat_s:
                    self._line(f"still running: {self._status(now)}")


def progress_for(args: Any, stream: TextIO) -> StderrProgress:
    """The progress display the global ``--quiet`` / ``--verbose`` options ask for."""
    level: Level = ("quiet" if getattr(args, "quiet", False) else
                    "verbose" if getattr(args, "verbose", False) else "normal")
    return StderrProgress(stream, level)


__all__ = ["Level", "StderrProgress", "progress_for"]
