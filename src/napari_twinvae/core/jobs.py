"""Long work in the core is a generator that yields progress and returns its result."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")


def drain(job: Generator[object, None, R]) -> R:
    """Run a job to the end, ignoring its progress, and return its result (scripts, tests)."""
    while True:
        try:
            next(job)
        except StopIteration as done:
            return done.value


def parameters_of(job: Callable[P, object]) -> Callable[[Callable[..., R]], Callable[P, R]]:
    """Decorator for a function that hands ``*args, **kwargs`` on to ``job`` (``count`` draining
    ``iter_count``): it shows ``job``'s parameters (help(), inspect.signature, type checkers) with
    its own name, docstring and return annotation, so the parameters are written down once."""

    def decorate(function: Callable[..., R]) -> Callable[P, R]:
        returns = inspect.signature(function).return_annotation
        function.__signature__ = inspect.signature(job).replace(return_annotation=returns)
        annotations = {k: v for k, v in job.__annotations__.items() if k != "return"}
        function.__annotations__ = {**annotations, **function.__annotations__}
        return function

    return decorate
