"""Turn a user-given name or path into a path inside its allowed root, or refuse it with one clear line.

Query parameters, form fields and uploaded file names come from a browser that may not be the
owner's: `?run=../../etc` or a symlink out of the runs directory must never open anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError

__all__ = ["run_name_in", "inside_allowed", "allowed_dirs", "cli_run_path", "ALLOWED_DIRS_ENV"]

ALLOWED_DIRS_ENV = "DISTILL_ALLOWED_DIRS"   # os.pathsep-separated directories a served app may read
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def run_name_in(roots: list[Path], name: str) -> Path:
    """The run directory `name` inside one of `roots` (a plain name, no separators, no way out)."""
    if not isinstance(name, str) or not _NAME.match(name) or ".." in name:
        raise UserError(f"{name!r} is not a run name (letters, digits, '_', '-', '.'; no paths)")
    for root in roots:
        base = Path(root).resolve()
        candidate = Path(root) / name
        if candidate.exists():
            real = candidate.resolve()
            if real.parent != base:
                raise UserError(f"run {name!r} points outside {root} (a symlink?); refused")
            return candidate
    return Path(roots[0]) / name


def allowed_dirs() -> list[Path]:
    """The directories named by DISTILL_ALLOWED_DIRS (none when unset)."""
    raw = os.environ.get(ALLOWED_DIRS_ENV, "")
    return [Path(p).resolve() for p in raw.split(os.pathsep) if p.strip()]


def inside_allowed(path: str, allowed: list[Path], what: str) -> Path:
    """`path` resolved (symlinks followed), if it lies inside one of `allowed`; else one clear refusal."""
    if not allowed:
        raise UserError(f"{what} is disabled on a served app; the server's owner can allow directories with "
                        f"{ALLOWED_DIRS_ENV}=dir1{os.pathsep}dir2")
    real = Path(path).expanduser().resolve()
    for root in allowed:
        if real == root or root in real.parents:
            return real
    raise UserError(f"{what} {path!r} is outside the allowed directories ({', '.join(map(str, allowed))})")


def cli_run_path(arg: str, roots: list[Path]) -> Path:
    """A command-line run argument: a path as given (the shell's user chose it), or a bare run name
    looked up inside `roots` (the runs directory, then the study's runs) with run_name_in's checks."""
    path = Path(arg)
    if path.exists() or os.sep in arg or (os.altsep and os.altsep in arg):
        return path
    return run_name_in(roots, arg)
