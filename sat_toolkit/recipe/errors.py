"""Recipe problems: collected, then reported together, one line each."""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable

from sat_toolkit.errors import SatError


@dataclasses.dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe, at a dotted key path (``attack.train.eps``)."""

    path: str
    message: str
    unknown_key: bool = False  # lets an override's typo be traced back to its --set
    missing_file: bool = False  # a local path that does not exist: what a dry run does without

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ProblemsError(SatError):
    """A file that cannot be used; ``problems`` lists every reason, not just the first.

    ``str(error)`` is one line per problem. The CLI shows a short header naming the file
    (and ``subject``, what kind of file it is) first, so the user sees at a glance how
    many things to fix.
    """

    subject = "file"

    def __init__(self, problems: Iterable[Problem | str], source: str | None = None) -> None:
        self.problems = [p if isinstance(p, Problem) else Problem("", p) for p in problems]
        self.source = source
        super().__init__("\n".join(str(p) for p in self.problems))

    def format_message(self) -> str:
        if len(self.problems) == 1:
            return f"{self.source}: {self.problems[0]}" if self.source else self.message
        where = f"{self.subject} {self.source}" if self.source else self.subject
        header = f"{where} has {len(self.problems)} problems:"
        return "\n".join([header, *(f"  {p}" for p in self.problems)])


class RecipeError(ProblemsError):
    """The recipe cannot be used; ``problems`` lists every reason, not just the first."""

    subject = "recipe"


class Problems(list[Problem]):
    """An accumulator the validators append to instead of raising at the first problem."""

    def add(self, path: str, message: str, *, unknown_key: bool = False, missing_file: bool = False) -> None:
        self.append(Problem(path, message, unknown_key, missing_file))

    def unknown(self, path: str, key: str, valid: Iterable[str], what: str = "key") -> None:
        """``path.key: unknown key; did you mean 'x'?`` (or the valid keys when nothing is close)."""
        self.add(join(path, key), f"unknown {what}{suggest(key, valid)}", unknown_key=True)


def join(path: str, key: str) -> str:
    """Dotted key path: ``join("attack", "train") == "attack.train"``."""
    return f"{path}.{key}" if path else key


def suggest(key: str, valid: Iterable[str]) -> str:
    """``; did you mean 'x'?``, or ``; valid: a, b, c`` when no name is close."""
    names = sorted(set(valid))
    close = difflib.get_close_matches(key, names, n=1)
    if close:
        return f"; did you mean '{close[0]}'?"
    return f"; valid: {', '.join(names)}" if names else ""
