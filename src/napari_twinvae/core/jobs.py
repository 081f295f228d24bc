"""Long work in the core is a generator that yields progress and returns its result."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

R = TypeVar("R")


def drain(job: Generator[object, None, R]) -> R:
    """Run a job to the end, ignoring its progress, and return its result (scripts, tests)."""
    while True:
        try:
            next(job)
        except StopIteration as done:
            return done.value
