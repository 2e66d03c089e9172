"""Undo and redo of an interactive session: the states it can go back to and forward to again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Generic, TypeVar

from medsam2.errors import UsageError

State = TypeVar("State")


@dataclass
class SessionHistory(Generic[State]):
    """Snapshots of a session's state before each step (undo) and of the steps undone (redo).

    A new step forgets the steps undone before it, as editors do; at most ``max_steps`` steps back
    are kept.
    """

    max_steps: int = 50
    #: how many times the state changed (a step, an undo, a redo): what an autosave compares
    revision: int = 0
    _back: list[State] = field(default_factory=list)
    _forward: list[State] = field(default_factory=list)

    def record(self, before: State) -> None:
        """A step was made; ``before`` is the state it started from."""
        self._back.append(before)
        del self._back[: -self.max_steps]
        self._forward.clear()
        self.revision += 1

    def undo(self, current: State) -> State:
        """The state before the last step (``current`` is kept for :meth:`redo`).

        Raises:
            UsageError: no step to undo.
        """
        if not self._back:
            raise UsageError("nothing to undo: no add, propagate or correct since the session opened")
        self._forward.append(current)
        self.revision += 1
        return self._back.pop()

    def redo(self, current: State) -> State:
        """The state the last :meth:`undo` left (``current`` goes back on the undo side).

        Raises:
            UsageError: nothing was undone since the last step.
        """
        if not self._forward:
            raise UsageError("nothing to redo: no step was undone since the last change")
        self._back.append(current)
        self.revision += 1
        return self._forward.pop()
