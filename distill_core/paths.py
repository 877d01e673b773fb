"""Turn a user-given name or path into a path inside its allowed root, or refuse it with one clear line.

Query parameters, form fields and uploaded file names come from a browser that may not be the
owner's: `?run=../../etc` or a symlink out of the runs directory must never open anything.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import UserError

__all__ = ["run_name_in", "inside_allowed", "allowed_dirs", "cli_run_path", "cli_out_path", "ALLOWED_DIRS_ENV"]

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


def _is_path(arg: str) -> bool:
    return os.sep in arg or bool(os.altsep and os.altsep in arg) or arg in (".", "..")


def cli_run_path(arg: str, roots: list[Path]) -> Path:
    """A command-line run argument: a path (it has a separator) as given, or a bare run name looked
    up inside `roots` (the runs directory, then the study's runs) with run_name_in's checks.

    A path on the command line is trusted the way `cp` trusts one: the shell's user chose it and the
    OS checks their rights. Only names, which the CLI itself places, are confined.
    """
    if _is_path(arg) or Path(arg).exists():
        return Path(arg)
    return run_name_in(roots, arg)


def cli_out_path(arg: str, runs_root: Path, resume: bool, check_contents: bool = True) -> Path:
    """`--out`: a bare name becomes a run inside the runs root; a path is taken as given, but a new run
    never writes into an existing directory that holds other things (`--out ~` or `--out /tmp` would
    otherwise scatter config.json, metrics.jsonl and checkpoints/ among the user's files).

    check_contents=False names the directory only: data-parallel ranks other than 0, which could see
    rank 0's temporary files in the directory rank 0 is creating."""
    path = Path(arg) if _is_path(arg) else run_name_in([runs_root], arg)
    if not check_contents:
        return path
    if path.exists() and not path.is_dir():
        raise UserError(f"--out {arg!r} is a file, not a run directory")
    if not resume and path.is_dir() and not (path / "config.json").exists() and any(path.iterdir()):
        raise UserError(f"--out {arg!r} is a directory that holds other files and no run; "
                        "name a new or empty directory")
    return path
