"""The one error type users see: what is wrong, where, and how to fix it."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad user input: a file, a shape, an id, a parameter.

    The message always reads ``<where>: <problem>. Fix: <fix>`` so the CLI can print it
    as is and exit non-zero.
    """

    def __init__(self, problem: str, *, fix: str, where: str | Path | None = None):
        self.problem = problem
        self.fix = fix
        self.where = str(where) if where is not None else None
        prefix = f"{self.where}: " if self.where else ""
        super().__init__(f"{prefix}{problem}. Fix: {fix}")

    def __reduce__(self):  # picklable with its keyword arguments: a Ray task's error reaches the driver whole
        return _rebuild, (self.problem, self.fix, self.where)


def missing_file(path: str | Path, *, what: str = "file", fix: str = "check the path in the study file") -> InputError:
    """The error for a path that should be a file: "not found", or "is a folder" where it is one."""
    path = Path(path)
    if path.is_dir():
        return InputError(f"{what} path is a folder, not a file", where=path, fix=fix)
    return InputError(f"{what} not found", where=path, fix=fix)


def _rebuild(problem: str, fix: str, where: str | None) -> InputError:
    return InputError(problem, fix=fix, where=where)
