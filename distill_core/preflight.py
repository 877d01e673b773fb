"""Checks a run's resolved settings, model and data completely before a run directory or job exists.

The job process would find the same mistakes, but only after a directory was made and the model
loaded; a form needs one clear message at once, and nothing left behind.
"""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path

# Imported here, under this module's import lock: two browser sessions pressing Start at once would
# otherwise race on transformers' lazy attribute loading ("cannot import name 'AutoConfig'"); the
# learner's loader imports the other two inside a function, so they are resolved here as well.
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

from .errors import UserError

__all__ = ["check_run_config", "check_uploads", "model_max_positions"]


def model_max_positions(name: str) -> int:
    """The position limit of a model, from its config alone (no weights are loaded)."""
    from .learner import _silence_transformers, resolve_model_path

    _silence_transformers()
    path = resolve_model_path(name)
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=Path(path).exists())
    except Exception as exc:
        raise UserError(f"could not load model {name!r} ({path}): {str(exc).splitlines()[0]}") from None
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        raise UserError(f"model {name!r} has no max_position_embeddings in its config; a BERT-family model is needed")
    return int(limit)


def _hub_possible(config) -> bool:
    if not config.data.allow_hub:
        return False
    try:
        import datasets  # noqa: F401  (only whether it is installed)
    except ImportError:
        return False
    return True


def check_run_config(config) -> None:
    """Raise UserError naming the setting, file or column if this RunConfig cannot start a run."""
    from .data import _find_split_file, default_data_dir, load_task_data
    from .tasks import get_task

    config.validate()
    limit = model_max_positions(config.model.name)
    config.distilled.validate(limit)
    if config.data.max_length > limit:
        raise UserError(f"max_length {config.data.max_length} is above the model's {limit} max positions")
    from .learner import resolve_device

    resolve_device(config.model.device)
    data = config.data
    if data.is_custom or get_task(data.task).is_demo:
        load_task_data(data)                     # reads and checks the files: columns, labels, classes
        return
    spec = get_task(data.task)
    data_dir = data.data_dir or default_data_dir()
    if data_dir and not Path(data_dir).is_dir():
        raise UserError(f"data directory not found: {data_dir}")
    local = data_dir is not None and all(_find_split_file(Path(data_dir), spec.name, s) is not None
                                         for s in (spec.train_split, spec.eval_split))
    if local or not _hub_possible(config):
        load_task_data(data)   # local files: check them; neither local nor hub: the loader's message names the paths


def check_uploads(config, uploads: dict[str, tuple[str, bytes]]) -> None:
    """Check a run on uploaded files {role: (file name, bytes)}; errors name the uploaded file, not a copy."""
    if not all(uploads.get(r) for r in ("train", "eval")):
        raise UserError("upload both a train file and an evaluation file")
    for role, (name, data) in uploads.items():
        if not data:
            raise UserError(f"the uploaded {role} file {name!r} is empty")
    with tempfile.TemporaryDirectory(prefix="distill-upload-") as tmp:
        trial = copy.deepcopy(config)
        trial.data.task = None
        paths = {}
        for role, (name, data) in uploads.items():
            suffix = Path(name).suffix.lower()
            path = Path(tmp) / f"{role}{suffix}"
            path.write_bytes(data)
            paths[role] = (path, name)
        trial.data.train_file, trial.data.eval_file = str(paths["train"][0]), str(paths["eval"][0])
        try:
            check_run_config(trial)
        except UserError as exc:
            message = str(exc)
            for path, name in paths.values():
                message = message.replace(str(path), repr(name))
            message = re.sub(re.escape(tmp) + r"[^\s,;:)']*", "the uploaded file", message)
            raise UserError(message) from None
