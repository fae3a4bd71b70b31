"""User-facing errors: each names the problem, where it is, and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass

from t2ir.ir import Loc

CUSTOM_OPS_DOC = "docs/custom_ops.md"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the user's model or inputs."""

    what: str
    op: str = ""
    loc: Loc = Loc()
    hint: str = ""

    def __str__(self) -> str:
        where = f" at {self.loc}" if self.loc else ""
        op = f"{self.op}: " if self.op else ""
        hint = f"\n    -> {self.hint}" if self.hint else ""
        return f"{op}{self.what}{where}{hint}"


class T2IRError(Exception):
    """Base of every error t2ir raises on purpose; its message is meant for the user."""


class ExportError(T2IRError):
    """The export cannot go on; lists every problem found, not only the first one."""

    def __init__(self, title: str, problems: list[Problem] | None = None):
        self.title = title
        self.problems = list(problems or [])
        lines = [title] + [f"  - {p}" for p in self.problems]
        super().__init__("\n".join(lines))


class UnsupportedOpsError(ExportError):
    """Ops with no translation; raised once with all of them."""

    def __init__(self, problems: list[Problem]):
        ops = sorted({p.op for p in problems})
        super().__init__(
            f"{len(ops)} operator(s) have no NNEF translation: {', '.join(ops)}. "
            f"Register a translator with @t2ir.register_op (see {CUSTOM_OPS_DOC}).",
            problems,
        )


class TranslationRefusedError(ExportError):
    """Translators refused some calls of their ops (`TranslationError`): the export retries
    with torch's decomposition of `refused` (op names) before giving up with this error."""

    def __init__(self, title: str, problems: list[Problem], refused: set[str]):
        super().__init__(title, problems)
        self.refused = set(refused)


class CheckIOError(T2IRError):
    """tract's outputs differ from PyTorch's more than the tolerance allows."""


class PassError(T2IRError):
    """A pass failed; names the pass and the ones that ran before it."""


class TranslationError(Exception):
    """Raised by a translator for a case it cannot express; the lowering pass turns it into a
    Problem with the node's op and location."""

    def __init__(self, what: str, hint: str = ""):
        super().__init__(what)
        self.what, self.hint = what, hint


class RewriteNotConverged(T2IRError):
    """A rule set kept rewriting past its round limit: two rules undo each other, or one keeps
    matching its own output. Names the rules that fired in the last round."""
