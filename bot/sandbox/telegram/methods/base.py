"""Plumbing for Bot API method handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ..core import Core
from ..params import Params

Handler = Callable[[Params], Awaitable[Any]]
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


class RawJson(str):
    """A result that is already JSON (queued updates); spliced into the response as is."""


def api_method(name: str) -> Callable[[F], F]:
    """Mark a coroutine method as the handler of Bot API method ``name``."""

    def mark(function: F) -> F:
        function.__api_method__ = name  # type: ignore[attr-defined]
        return function

    return mark


@dataclass(frozen=True, slots=True)
class Method:
    """A Bot API method: its canonical name and handler."""

    name: str
    handler: Handler


class MethodGroup:
    """A set of related handlers sharing the sandbox core."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.state = core.state

    def methods(self) -> list[Method]:
        """The handlers of this group, found by their :func:`api_method` mark."""
        found = []
        for attribute in dir(type(self)):
            name = getattr(getattr(type(self), attribute), "__api_method__", None)
            if name is not None:
                found.append(Method(name, getattr(self, attribute)))
        return found
