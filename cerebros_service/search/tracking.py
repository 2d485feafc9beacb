"""Best-epoch bookkeeping of one candidate's training, in plain Python.

Both trainers feed it one epoch's scores at a time. It keeps the best epoch of the
ranking metric (on a tie, the lower validation loss), asks to stop after ``patience``
epochs without gain, and says when the candidate's weights must be snapshot (each
new best), so the reported value, the reported epoch and the saved weights always
come from the same epoch — however training ends (patience, all epochs, deadline,
cancel, or a value that stops being finite after good epochs).
"""

from __future__ import annotations

import math
import time

from ..settings import Direction, Standing, outranks

# Why a candidate stopped training (TrialRecord.stop_reason).
STOP_REASONS = ("epochs", "patience", "non_finite", "max_time_seconds", "cancelled")


class EpochTracker:
    def __init__(self, monitor: str, direction: Direction, patience: int, started: float):
        self.monitor, self.direction, self.patience, self.started = monitor, direction, patience, started
        self.best: Standing | None = None  # the best epoch: its value, validation loss, number
        self.epochs_run = 0
        self.wait = 0
        self.first_epoch_s: float | None = None
        self.stop_reason: str | None = None
        self.non_finite: str | None = None  # what stopped being finite, and when
        self.history: dict[str, list[float | None]] = {}

    @property
    def best_value(self) -> float | None:
        return None if self.best is None else self.best.value

    @property
    def best_epoch(self) -> int | None:
        return None if self.best is None else self.best.order

    @property
    def best_loss(self) -> float | None:
        """The best epoch's validation loss (what broke a tie on the value)."""
        return None if self.best is None else self.best.loss

    @property
    def stopped(self) -> bool:
        return self.stop_reason is not None

    @property
    def failure(self) -> str | None:
        """Why the candidate has no result: set only when no epoch ever counted."""
        if self.best_value is not None:
            return None
        if self.non_finite is not None:
            return self.non_finite
        return None

    def epoch_end(self, epoch: int, logs: dict[str, float]) -> bool:
        """Record one epoch's scores; True when this epoch is the new best (snapshot now).

        Sets ``stop_reason`` when training must stop.
        """
        self.epochs_run = epoch + 1
        if self.first_epoch_s is None:
            self.first_epoch_s = time.monotonic() - self.started
        for key, value in logs.items():
            self.history.setdefault(key, []).append(
                float(value) if value is not None and math.isfinite(value) else None)
        for key in ("loss", "val_loss", self.monitor):
            value = logs.get(key)
            if value is not None and not math.isfinite(value):
                self.non_finite = f"{key} became {float(value)} at epoch {epoch + 1}"
                self.stop_reason = "non_finite"
                return False
        value = logs.get(self.monitor)
        if value is None:
            return False
        value, loss = float(value), logs.get("val_loss")
        # On a tie the lower validation loss: the first epoch to reach a value is rarely the
        # best model that reaches it (28 validation rows move accuracy in steps of 0.036).
        loss = None if loss is None or self.monitor == "val_loss" else float(loss)
        standing = Standing(value, loss, epoch + 1)
        if outranks(standing, self.best, self.direction):
            self.best, self.wait = standing, 0
            return True
        self.wait += 1
        if self.wait >= self.patience:
            self.stop_reason = "patience"
        return False

    def stop(self, reason: str) -> None:
        """Training ended from outside (all epochs run, deadline, cancel); first reason wins."""
        if self.stop_reason is None:
            self.stop_reason = reason
