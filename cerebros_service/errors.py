"""Failure kinds as types, so callers branch on a class and never on a string.

A trial that fails is a ``TrialRecord`` with ``status: "failed"`` (the search goes
on); the errors here end a run and become a ``status: "failed"`` result whose
``error_type`` is the class's ``error_type``. Anything else that escapes is a bug and is reported as
``internal_error``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ErrorDetail:
    """One problem, located: ``loc`` is the path to the offending value."""

    loc: tuple[str | int, ...]
    message: str

    def as_dict(self) -> dict:
        return {"loc": list(self.loc), "message": self.message}


class ServiceError(Exception):
    """Base of every error that ends a run with a clean ``failed`` result."""

    error_type = "internal_error"

    def __init__(self, message: str, details: list[ErrorDetail] | None = None, *,
                 total_details: int | None = None):
        super().__init__(message)
        self.message = message
        self.details: list[ErrorDetail] = list(details or [])
        # How many problems there were, when ``details`` lists only the first of them.
        self.total_details = max(total_details or 0, len(self.details))


class InputError(ServiceError):
    """The spec or opts are wrong: normalization or validation failed."""

    error_type = "validation_error"


class DatasetError(ServiceError):
    """The data could not be found, read, or used for the requested task."""

    error_type = "dataset_error"


class SearchFailed(ServiceError):
    """The search ran but produced no usable model (e.g. every trial failed)."""

    error_type = "search_failed"

