"""The prediction log's own errors, apart so each part of the log raises them without the others."""

from __future__ import annotations


class PredictionLogError(RuntimeError):
    """Base of the prediction log's own errors."""


class PredictionLogUnavailableError(PredictionLogError):
    """The log database cannot be reached, created or brought to the current schema at start."""


class PredictionLogSchemaError(PredictionLogUnavailableError):
    """The database holds log tables of a shape no revision knows: nothing was changed.

    A subclass of the unavailable error, so every caller that reports a log it cannot open
    reports this one the same way, naming the problem.
    """


class LogBackpressureError(PredictionLogError):
    """A served row found no room in time: answer 503 rather than a 200 without a row."""


class PredictionLogClosedError(PredictionLogError):
    """The writer is closed; rows handed to it now would never be written."""
