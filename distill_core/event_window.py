"""A bounded in-memory view of a run's events: every evaluation, a thinned history of steps, the recent steps whole.

A 60,000-step run emits 60,000 step events; a live page needs the evaluations, a curve of the
real-data loss that still spans the whole run, and the latest steps at full resolution. The
window keeps exactly that in memory of a fixed size, whatever the run's length; the run store
(metrics.jsonl) keeps every event for anyone who needs them all.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable

__all__ = ["EventWindow"]

_STEP = "step"


class EventWindow:
    """Events in arrival order, bounded: step events are thinned by doubling strides past `history`."""

    def __init__(self, history: int = 1000, recent: int = 300, others: int = 2000) -> None:
        if history < 2 or recent < 1 or others < 1:
            raise ValueError("history must be >= 2, recent and others >= 1")
        self._history_cap = history
        self._history: list[dict] = []        # every `stride`-th step event, oldest first
        self._stride = 1
        self._recent: deque[dict] = deque(maxlen=recent)
        self._others: deque[dict] = deque(maxlen=others)   # start, eval, baseline, checkpoint, done, ...
        self._start: dict | None = None
        self.count = 0                        # events seen; doubles as a version number for redraws
        self.steps_seen = 0

    def add(self, event: dict) -> None:
        self.count += 1
        kind = event.get("type")
        if kind == _STEP:
            self.steps_seen += 1
            self._recent.append(event)
            if int(event.get("step", 0)) % self._stride == 0:
                self._history.append(event)
                if len(self._history) > self._history_cap:
                    self._stride *= 2
                    self._history = [e for e in self._history if int(e.get("step", 0)) % self._stride == 0]
        elif kind == "start" and self._start is None:
            self._start = event                # the first start names the run; later ones are resumes
            self._others.append(event)
        else:
            self._others.append(event)

    def extend(self, events: Iterable[dict]) -> "EventWindow":
        for e in events:
            self.add(e)
        return self

    def events(self) -> list[dict]:
        """What is held, as one list ordered by step (ties: the step event, then the others in arrival order)."""
        steps = {int(e["step"]): e for e in self._history}
        steps.update({int(e["step"]): e for e in self._recent})
        others = list(self._others)
        if self._start is not None and self._start not in others:
            others.insert(0, self._start)
        merged = [(int(e.get("step", 0) or 0), 1, i, e) for i, e in enumerate(others)]
        merged += [(s, 0, 0, e) for s, e in steps.items()]
        merged.sort(key=lambda t: t[:3])
        return [t[3] for t in merged]

    def recent_steps(self) -> list[dict]:
        return list(self._recent)

    def latest(self, kind: str) -> dict | None:
        if kind == _STEP:
            return self._recent[-1] if self._recent else None
        return next((e for e in reversed(self._others) if e.get("type") == kind), None)

    def __len__(self) -> int:
        return len(self._history) + len(self._recent) + len(self._others)
