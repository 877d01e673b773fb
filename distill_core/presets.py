"""The only home of defaults: named presets of every setting, from which the CLI, the app's form and the study
all resolve their run configs.

- `cpu` (the default everywhere): the recipe that learns within minutes on a laptop CPU (real-example
  init, model-attention init, inner lr 0.3 split over the T inner steps, constant outer schedule,
  L = 64, 300 outer steps, a moving average of the distilled data with decay 0.99). Its inits, the split
  and the average go beyond the paper (docs/ablation: at T = 3 with the same data, 0.3 per step ends at
  the majority class, 0.1 per step above T = 1; without the average, runs fell late by up to 6 points
  below their own best; with it at 0.99, 5 seeds on the demo and 5 on SST-2 end within 2).
- `paper`: METHOD.md and the reference implementation: random inits, inner lr 1e-2, L = 512, Adam
  at 1e-2 with linear warm-up (10 %) and decay, clipping at 1.0, 100 learners. Its outer steps are
  30 epochs of SST-2 at batch 32; set --outer-steps for another task.
- `BASE` holds what a preset does not change; the engine's dataclasses take their field defaults
  from it, so code that builds a config by hand gets the same values as before presets existed.

This module imports nothing from the engine, so every config module can import it.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["BASE", "PRESETS", "DEFAULT_PRESET", "preset_values", "default_of", "defaults_text", "SECTIONS",
           "SCHEDULES"]

SECTIONS = ("data", "model", "distilled", "distill")
# the outer-lr schedules after the warm-up (distill.schedule): linear decay to 0 (the paper), or flat
SCHEDULES = ("linear", "constant")

BASE: dict[str, dict[str, Any]] = {
    "data": {"task": "sst2", "data_dir": None, "train_file": None, "eval_file": None, "text_columns": [],
             "label_column": None, "max_length": 128, "real_batch_size": 32, "train_rows": None,
             "train_min_words": None,
             "eval_rows": None, "allow_hub": True, "seed": 0, "dev_fraction": 0.05, "dev_max_rows": 2000,
             "dev_disjoint": False},
    "model": {"name": "bundled:all-MiniLM-L6-v2", "device": "auto", "dtype": "float32", "pooling": "cls"},
    "distilled": {"seq_len": 64, "samples_per_class": 1, "inner_steps": 1, "different_data_per_step": False,
                  "label_type": "soft", "attention_labels": "cls", "attention_loss_weight": 1.0,
                  "inner_lr_init": 0.1, "inner_lr_max": None, "split_inner_lr": False, "inner_lr_groups": "one", "init": "random", "attention_init": "random",
                  "feature_labels": "none", "feature_loss_weight": 1.0, "embed_max_norm": 0.0},
    "distill": {"outer_steps": 300, "optimizer": "adam", "lr_embeds": 1e-2, "lr_labels": 1e-2,
                "lr_attention": 1e-2, "lr_inner_lr": 1e-2, "meta_batch": 1, "average": 0.0, "weight_decay": 0.0, "warmup_ratio": 0.1,
                "schedule": "linear", "grad_clip": 1.0, "eval_every": 50, "eval_learners": 10,
                "eval_precision": "float32", "real_precision": "float32", "real_word_dropout": 0.0,
                "synthetic_noise": 0.0, "model_noise": 0.0, "eval_at_start": True, "baselines": True, "max_minutes": None,
                "save_every_minutes": 5.0, "inner_memory": "auto", "recompute_copies": 1, "seed": 0,
                "teacher_weight": 0.0, "teacher_steps": 500},
}

_CHANGES: dict[str, dict[str, dict[str, Any]]] = {
    "cpu": {"data": {"eval_rows": 300},
            "distilled": {"seq_len": 64, "inner_lr_init": 0.3, "init": "real", "attention_init": "model",
                          "split_inner_lr": True},
            "distill": {"outer_steps": 300, "schedule": "constant", "average": 0.99, "eval_every": 25,
                        "eval_learners": 4}},
    "paper": {"distilled": {"seq_len": 512, "inner_lr_init": 1e-2, "init": "random", "attention_init": "random",
                  "feature_labels": "none", "feature_loss_weight": 1.0},
              "distill": {"outer_steps": 63_135, "schedule": "linear", "eval_every": 2_000, "eval_learners": 100}},
}


def _merged(changes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = copy.deepcopy(BASE)
    for section, values in changes.items():
        unknown = set(values) - set(out[section])
        assert not unknown, f"preset names settings that do not exist: {unknown}"   # a bug here, not user input
        out[section].update(values)
    return out


PRESETS: dict[str, dict[str, dict[str, Any]]] = {name: _merged(c) for name, c in _CHANGES.items()}
DEFAULT_PRESET = "cpu"


def preset_values(name: str) -> dict[str, dict[str, Any]]:
    """Every setting of a preset, by section (a copy the caller may change)."""
    from .errors import UserError

    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def default_of(section: str, key: str, preset: str = DEFAULT_PRESET) -> Any:
    return PRESETS[preset][section][key]


def defaults_text(section: str, key: str) -> str:
    """'default: cpu 64, paper 512' (or one value when the presets agree), for --help and the form."""
    values = {name: p[section][key] for name, p in PRESETS.items()}
    if len({repr(v) for v in values.values()}) == 1:
        return f"default {next(iter(values.values()))}"
    return "default " + ", ".join(f"{name} {v}" for name, v in values.items())
