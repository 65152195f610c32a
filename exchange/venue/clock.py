"""The replay venue's clock: replay time (epoch ms) running at a multiple of wall time, or stepped.

``ReplayClock.now_ms()`` is what the venue serves up to (REST answers nothing after it) and what the
replay driver emits ticks against. Running at ``speed`` s, replay time advances ``speed`` ms per
wall-clock ms from where it was last anchored (start, resume, a speed change); paused it stands
still; in step mode (``speed="step"``) it moves only when a test or benchmark calls ``advance_ms``
or ``set_ms``. It never passes ``end_ms``. Thread-safe: tests and the CLI drive it from other
threads while the venue's event loop reads it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

#: Fastest replay speed accepted (replay ms per wall ms); beyond it the driver is the bottleneck.
MAX_SPEED = 100_000.0

Speed = float | Literal["step"]


class ReplayClock:
    """Replay time between ``start_ms`` and ``end_ms`` (epoch ms) at ``speed``× wall time, or stepped.

    Starts paused at ``start_ms``; ``resume()`` starts it. ``wall_s`` (monotonic seconds) is the
    time source, replaceable in tests.
    """

    def __init__(
        self,
        start_ms: int,
        end_ms: int,
        speed: Speed = 1.0,
        *,
        wall_s: Callable[[], float] = time.monotonic,
    ) -> None:
        if end_ms <= start_ms:
            raise ValueError(f"replay end_ms {end_ms} must be after start_ms {start_ms}")
        self.start_ms = int(start_ms)
        self.end_ms = int(end_ms)
        self._wall_s = wall_s
        self._lock = threading.Lock()
        self._anchor_ms = float(start_ms)
        self._anchor_wall_s = wall_s()
        self._paused = True
        self._speed: float | None = _check_speed(speed)
        self._listeners: list[Callable[[], None]] = []

    # Reading ---------------------------------------------------------------------------------
    def now_ms(self) -> int:
        """Return replay time, epoch ms (never after ``end_ms``)."""
        with self._lock:
            return int(self._now_locked())

    __call__ = now_ms

    @property
    def speed(self) -> float | None:
        """Replay ms per wall ms, or None in step mode."""
        return self._speed

    @property
    def paused(self) -> bool:
        """True while replay time stands still (always true in step mode between steps)."""
        return self._paused or self._speed is None

    def wall_delay_s(self, ts_ms: int) -> float | None:
        """Return wall seconds until replay time reaches ``ts_ms``: 0 if it has, None if it cannot by itself.

        None means paused or step mode: only ``resume``/``advance_ms``/``set_ms`` can move the clock.
        """
        with self._lock:
            now = self._now_locked()
            if now >= ts_ms:
                return 0.0
            if self._paused or self._speed is None:
                return None
            return (min(ts_ms, self.end_ms) - now) / self._speed / 1000.0

    # Control ---------------------------------------------------------------------------------
    def resume(self) -> None:
        """Let replay time run from where it stands (no effect in step mode)."""
        with self._lock:
            self._anchor_ms = self._now_locked()
            self._anchor_wall_s = self._wall_s()
            self._paused = False
        self._notify()

    def pause(self) -> None:
        """Stop replay time where it stands."""
        with self._lock:
            self._anchor_ms = self._now_locked()
            self._anchor_wall_s = self._wall_s()
            self._paused = True
        self._notify()

    def set_speed(self, speed: Speed) -> None:
        """Change the speed (``"step"`` switches to step mode) from the current replay time on."""
        checked = _check_speed(speed)
        with self._lock:
            self._anchor_ms = self._now_locked()
            self._anchor_wall_s = self._wall_s()
            self._speed = checked
        self._notify()

    def advance_ms(self, delta_ms: int) -> int:
        """Move replay time forward by ``delta_ms`` (any mode); return the new replay time."""
        if delta_ms < 0:
            raise ValueError(f"the replay clock does not go back (advance_ms({delta_ms}))")
        with self._lock:
            self._anchor_ms = min(float(self.end_ms), self._now_locked() + delta_ms)
            self._anchor_wall_s = self._wall_s()
            now = int(self._anchor_ms)
        self._notify()
        return now

    def set_ms(self, ts_ms: int) -> int:
        """Move replay time forward to ``ts_ms`` (capped at ``end_ms``); return the new replay time."""
        with self._lock:
            now = self._now_locked()
            if ts_ms < now:
                raise ValueError(f"the replay clock does not go back: now {int(now)}, asked {ts_ms}")
            self._anchor_ms = float(min(ts_ms, self.end_ms))
            self._anchor_wall_s = self._wall_s()
            now = self._anchor_ms
        self._notify()
        return int(now)

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` (from the controlling thread) after every change of speed, pause or time."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Forget a listener added with ``add_listener`` (no error if it is not there)."""
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    # Internals -------------------------------------------------------------------------------
    def _now_locked(self) -> float:
        if self._paused or self._speed is None:
            return self._anchor_ms
        elapsed_ms = (self._wall_s() - self._anchor_wall_s) * 1000.0 * self._speed
        return min(float(self.end_ms), self._anchor_ms + elapsed_ms)

    def _notify(self) -> None:
        with self._lock:
            listeners = list(self._listeners)
        for callback in listeners:
            callback()


def _check_speed(speed: Speed) -> float | None:
    if speed == "step":
        return None
    if isinstance(speed, str):
        raise ValueError(f"replay speed must be a number or 'step', got {speed!r}")
    value = float(speed)
    if not 0 < value <= MAX_SPEED:
        raise ValueError(f"replay speed must be in (0, {MAX_SPEED:g}] (× wall time) or 'step', got {speed}")
    return value


def parse_speed(text: str) -> Speed:
    """Parse a command-line speed: ``"step"``, ``"60"`` or ``"60x"``; raise ValueError naming the problem."""
    cleaned = text.strip().lower()
    if cleaned == "step":
        return "step"
    try:
        value = float(cleaned.removesuffix("x"))
    except ValueError:
        raise ValueError(
            f"replay speed must be a number such as 60 or 60x, or 'step'; got {text!r}"
        ) from None
    _check_speed(value)
    return value
