"""One setting of a condensation run: its name, default, command-line type and choices, help, and
whether it decides what the run computes, declared where the setting belongs (``config.py`` for
the settings every method shares, a method's module for its own).

``config.CondenseConfig`` holds the values, ``cli.build_parser`` makes one flag per setting
(``--name-with-dashes``) from these declarations; nothing restates them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple, Union

Text = Union[str, Callable[[], str]]  # a callable: text that depends on what is registered


def text(t: Optional[Text]) -> str:
    return "" if t is None else t() if callable(t) else t


@dataclass(frozen=True)
class Setting:
    """``default`` None means "derived" (from other settings or the method: ``derived`` says how,
    for the help). ``type`` parses the command-line value (None: a string). ``choices``: the
    accepted values, or a callable returning them (the registries). ``minimum``: the least value
    ``resolve`` accepts (None: no bound). ``identity``: the setting changes what the run computes,
    so a checkpoint resumes only under the same value."""

    name: str
    default: Any
    help: Text
    type: Optional[Callable[[str], Any]] = None
    choices: Union[None, Sequence[str], Callable[[], Sequence[str]]] = None
    derived: Optional[Text] = None
    minimum: Optional[float] = None
    identity: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def choice_list(self) -> Optional[Tuple[str, ...]]:
        c = self.choices() if callable(self.choices) else self.choices
        return None if c is None else tuple(c)

    def show(self, value: Any) -> str:
        """A value as the help prints it (None: what it is derived from)."""
        return text(self.derived) if value is None else str(value)
