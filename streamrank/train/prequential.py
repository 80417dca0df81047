"""Prequential (test-then-train) evaluation: every sample is scored before the model learns from it.

The window keeps the last N (score, label) pairs in a ring buffer; the curve records the window's AUC and
log-loss as learning proceeds, which is what docs/ plots and what the registry's guardrail compares.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamrank.train.metrics import auc, log_loss


@dataclass
class PrequentialWindow:
    """The last `size` predictions with their labels, and the curve of window metrics."""

    size: int
    scores: np.ndarray = field(init=False)
    labels: np.ndarray = field(init=False)
    filled: int = 0
    cursor: int = 0
    seen: int = 0
    curve: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size <= 0:
            raise ValueError("the prequential window needs a positive size")
        self.scores = np.zeros(self.size, dtype=np.float32)
        self.labels = np.zeros(self.size, dtype=np.float32)

    def add(self, scores: np.ndarray, labels: np.ndarray) -> None:
        """Adds predictions (probabilities) made before training on these labels."""
        n = len(scores)
        self.seen += n
        if n >= self.size:
            self.scores[:] = scores[-self.size:]
            self.labels[:] = labels[-self.size:]
            self.cursor, self.filled = 0, self.size
            return
        end = self.cursor + n
        if end <= self.size:
            self.scores[self.cursor:end] = scores
            self.labels[self.cursor:end] = labels
        else:
            first = self.size - self.cursor
            self.scores[self.cursor:] = scores[:first]
            self.labels[self.cursor:] = labels[:first]
            self.scores[: n - first] = scores[first:]
            self.labels[: n - first] = labels[first:]
        self.cursor = end % self.size
        self.filled = min(self.size, self.filled + n)

    def recent(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The newest min(n, filled) scores and labels."""
        n = min(n, self.filled)
        if n <= 0:
            return self.scores[:0], self.labels[:0]
        idx = (self.cursor - n + np.arange(n)) % self.size if self.filled == self.size else \
            np.arange(self.filled - n, self.filled)
        return self.scores[idx], self.labels[idx]

    def metrics(self, last: int | None = None) -> dict[str, float]:
        """AUC and log-loss over the window, or its newest `last` entries (NaN AUC with one class only)."""
        s, y = self.recent(self.filled if last is None else last)
        if not len(s):
            return {"auc": float("nan"), "logloss": float("nan"), "window": 0.0, "positive_rate": float("nan")}
        return {"auc": auc(s, y), "logloss": log_loss(s, y), "window": float(len(s)),
                "positive_rate": float(y.mean())}

    def record(self, **extra: float) -> dict[str, float]:
        """Appends the current window metrics (plus `extra`, e.g. wall time) to the curve; returns them."""
        point = {"samples": float(self.seen), **self.metrics(), **extra}
        self.curve.append(point)
        return point

    def state(self) -> dict:
        """Everything needed to resume the window (checkpointed with the model)."""
        return {"size": self.size, "scores": self.scores.copy(), "labels": self.labels.copy(),
                "filled": self.filled, "cursor": self.cursor, "seen": self.seen, "curve": list(self.curve)}

    @classmethod
    def from_state(cls, state: dict) -> PrequentialWindow:
        """Inverse of `state`."""
        w = cls(int(state["size"]))
        w.scores[:] = state["scores"]
        w.labels[:] = state["labels"]
        w.filled, w.cursor, w.seen = int(state["filled"]), int(state["cursor"]), int(state["seen"])
        w.curve = list(state["curve"])
        return w
