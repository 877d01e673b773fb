"""The Distill form as data: one `Field` per setting of the method, values from a preset, and values -> RunConfig.

Widget keys are the setting names, so tests and pages find widgets by the same names as
the engine's dataclasses (`seq_len`, `outer_steps`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import default_data_dir
from ..distilled import DistilledConfig
from ..distiller import DistillConfig, RunConfig
from ..learner import BUNDLED_MODEL, ModelConfig
from ..presets import DEFAULT_PRESET, PRESETS, preset_values
from ..tasks import TASKS

__all__ = ["Field", "FIELDS", "SECTIONS", "defaults", "default_task", "config_from_values", "preset_widget_values",
           "values_from_config", "task_options", "missing_settings", "preset_names"]

# form section -> settings section of distill_core.presets
_PRESET_SECTION = {"Data": "data", "Model": "model", "Distilled data": "distilled", "Outer loop and evaluation": "distill"}
_ZERO_IS_NONE = ("train_rows", "train_min_words", "eval_rows", "max_minutes", "inner_lr_max")    # 0 in the form, None in the engine


@dataclass(frozen=True)
class Field:
    key: str                  # widget key == setting name
    label: str
    section: str
    kind: str                 # int | float | bool | choice | text
    help: str = ""
    options: tuple = ()
    min: float | None = None  # only where a smaller value can never make sense; the engine validates the rest

    @property
    def default(self) -> Any:
        """The widget's value in the default preset (presets.py is the only home of defaults)."""
        return preset_widget_values(DEFAULT_PRESET)[self.key]


def default_task() -> str:
    """sst2 where the data directory holds it, else the built-in demo set (works with no network)."""
    d = default_data_dir()
    if d and any((Path(d) / "sst2" / f"train{s}").exists() for s in (".parquet", ".csv", ".tsv", ".jsonl")):
        return "sst2"
    return "demo"


SECTIONS = ("Data", "Model", "Distilled data", "Outer loop and evaluation")

FIELDS: tuple[Field, ...] = (
    Field("max_length", "Max tokens per real example", "Data", "int", "real examples are truncated to this",
          min=8),
    Field("real_batch_size", "Real batch size", "Data", "int", "real examples per outer step (paper: 32)", min=1),
    Field("train_rows", "Train rows (0 = all)", "Data", "int", "use only this many random train rows", min=0),
    Field("train_min_words", "Min words per train row (0 = all)", "Data", "int",
          "beyond the paper: keep only train rows this long, before the dev split is carved (SST-2's train "
          "split is mostly short phrases, its validation split whole sentences)", min=0),
    Field("dev_fraction", "Dev split (share of train)", "Data", "float",
          "held out from train (stratified, seeded, at most 2,000 rows): periodic validation and `best` use it, "
          "so the evaluation split only reports; 0 validates on the evaluation split", min=0.0),
    Field("dev_disjoint", "Dev rows disjoint from training", "Data", "bool",
          "beyond the paper: dev takes only rows no other train row contains, and the rows inside them leave "
          "training (SST-2's train split holds every phrase of each sentence: a row carved at random sits "
          "inside a train row 9 times in 10)"),
    Field("eval_rows", "Validation rows (0 = all)", "Data", "int",
          "periodic validation on this many random dev rows, for speed on CPU; Runs > Evaluate scores the "
          "whole evaluation split", min=0),
    Field("model", "Model", "Model", "text",
          "hub name or local path of a BERT-family checkpoint; the bundled model needs no network"),
    Field("device", "Device", "Model", "choice", "auto picks cuda, then mps, then cpu",
          options=("auto", "cpu", "cuda", "mps")),
    Field("dtype", "Dtype", "Model", "choice", options=("float32", "float64", "bfloat16")),
    Field("pooling", "Pooling", "Model", "choice",
          "what the head reads: cls, the pooler at [CLS] (the paper); mean (beyond the paper), the mean of the "
          "last layer over the tokens, as sentence-transformers models like the bundled one were trained",
          options=("cls", "mean")),
    Field("seq_len", "Sequence length L", "Distilled data", "int",
          "positions of each synthetic sample (paper: 512; shorter is far cheaper)"),
    Field("samples_per_class", "Samples per class", "Distilled data", "int"),
    Field("inner_steps", "Inner steps T", "Distilled data", "int", "plain SGD steps of the inner loop (1-5)"),
    Field("different_data_per_step", "Different data per step", "Distilled data", "bool",
          "step t uses its own share of the samples (samples per class must be a multiple of T)"),
    Field("label_type", "Labels", "Distilled data", "choice", options=("hard", "soft", "unrestricted")),
    Field("attention_labels", "Attention labels", "Distilled data", "choice",
          "cls: the [CLS] row of every layer and head; all: full L x L", options=("cls", "all", "none")),
    Field("attention_loss_weight", "Attention loss weight (lambda)", "Distilled data", "float"),
    # The CPU recipe (measured on SST-2 with the bundled model: rising accuracy after ~100 outer
    # steps instead of ~250+): real-example init, attention labels from the model, inner lr 0.3.
    # Both inits go beyond the paper; pick "random" for the paper's setting.
    Field("inner_lr_init", "Initial inner lr", "Distilled data", "float",
          "learned, kept positive by softplus (the paper's reference: 0.01; 0.3 learns much faster here)"),
    Field("inner_lr_max", "Inner lr bound (0 = none)", "Distilled data", "float",
          "a bound keeps the learned inner lr below it (max * sigmoid; beyond the paper); 0: softplus, "
          "unbounded (the paper)", min=0.0),
    Field("split_inner_lr", "Split the inner lr over T steps", "Distilled data", "bool",
          "T > 1: each step starts at (and is bounded by) the initial lr and bound divided by T, so T steps move "
          "the model as far as one; at one step's lr each the unrolled hypergradient explodes (beyond the paper)"),
    Field("inner_lr_groups", "Inner lr per", "Distilled data", "choice",
          "one: a single learned lr per step (the paper); head: one for the encoder and one for the pooler and "
          "classifier; layer: one for the embeddings, each layer and the head (beyond the paper, as MAML++)",
          options=("one", "head", "layer")),
    Field("init", "Initialisation", "Distilled data", "choice",
          "real: word embeddings of a real train example, padded (beyond the paper, faster); real-fill: of real "
          "examples of the class end to end until L is full (beyond the paper); random: normal (the paper)",
          options=("real", "real-fill", "random")),
    Field("attention_init", "Attention-label initialisation", "Distilled data", "choice",
          "model: the pre-trained model's own attention on the initial sample (beyond the paper); "
          "random: normal (the paper)", options=("model", "random")),
    Field("feature_labels", "Feature labels", "Distilled data", "choice",
          "pooled: each sample also learns a target for the pooled output the head reads, starting at the model's "
          "own, and the inner loss adds its squared distance (beyond the paper); none: the paper",
          options=("none", "pooled")),
    Field("feature_loss_weight", "Feature loss weight (mu)", "Distilled data", "float",
          "weight of the feature labels' squared distance in the inner loss", min=0.0),
    Field("embed_max_norm", "Synthetic token norm cap", "Distilled data", "float",
          "beyond the paper: each synthetic token vector enters the model at most at this norm (a real word "
          "embedding's is ~1; 0: no cap, the paper); uncapped, they outgrow the position embeddings ~50x and "
          "the data loses word order", min=0.0),
    Field("outer_steps", "Outer steps", "Outer loop and evaluation", "int"),
    Field("optimizer", "Optimizer", "Outer loop and evaluation", "choice", options=("adam", "adamw")),
    Field("lr_embeds", "Outer lr: embeddings", "Outer loop and evaluation", "float"),
    Field("lr_labels", "Outer lr: labels", "Outer loop and evaluation", "float"),
    Field("lr_attention", "Outer lr: attention labels", "Outer loop and evaluation", "float"),
    Field("lr_inner_lr", "Outer lr: inner lr", "Outer loop and evaluation", "float",
          "0 keeps the inner lr at its initial value"),
    Field("meta_batch", "Meta-batch K", "Outer loop and evaluation", "int",
          "real batches and head initialisations per outer step, hypergradients averaged (beyond the "
          "paper's 1; each step costs K times as much)", min=1),
    Field("average", "Average the distilled data (decay, 0 = off)", "Outer loop and evaluation", "float",
          "validate, save and return a moving average of the distilled data (cpu preset: 0.99): steadier late in a run "
          "(beyond the paper, which keeps the last iterate)", min=0.0),
    Field("teacher_weight", "Teacher targets in the outer loss (0 = off)", "Outer loop and evaluation", "float",
          "beyond the paper: the outer loss's target mixes each real example's gold label (1 - w) with the class "
          "probabilities (w) of a teacher, the same model fine-tuned on the train split; trained once, then "
          "cached; 0: gold labels only (the paper)", min=0.0),
    Field("teacher_steps", "Teacher fine-tuning batches", "Outer loop and evaluation", "int",
          "batches of 32 (AdamW 5e-5) that make the teacher, when its weight is above 0", min=1),
    Field("weight_decay", "Weight decay", "Outer loop and evaluation", "float"),
    Field("warmup_ratio", "Warm-up ratio", "Outer loop and evaluation", "float"),
    Field("schedule", "Outer lr schedule", "Outer loop and evaluation", "choice",
          "after warm-up: constant (part of the CPU recipe: +2.6 points at 300 steps on SST-2) or "
          "linear decay to 0 (the paper)", options=("constant", "linear")),
    Field("grad_clip", "Gradient clip (0 = off)", "Outer loop and evaluation", "float"),
    Field("eval_every", "Evaluate every N steps (0 = start and end)", "Outer loop and evaluation", "int"),
    Field("eval_learners", "Learners per evaluation", "Outer loop and evaluation", "int",
          "fresh heads fine-tuned on the distilled data; mean +- std (paper: 100, at the end)"),
    Field("eval_precision", "Scoring precision", "Outer loop and evaluation", "choice",
          "bfloat16 scores under bf16 autocast: about 1.8x faster evaluations on CPUs with bf16 units "
          "(fine-tuning stays float32)", options=("float32", "bfloat16")),
    Field("real_precision", "Real-batch precision", "Outer loop and evaluation", "choice",
          "beyond the paper: bfloat16 runs each outer step's real-batch pass under bf16 autocast (the synthetic "
          "passes stay float32): about 1.2x faster steps on CPUs with bf16 units, much slower on those without",
          options=("float32", "bfloat16")),
    Field("real_word_dropout", "Real-batch word dropout", "Outer loop and evaluation", "float",
          "beyond the paper: each outer step's real examples lose this share of their tokens ([CLS] and [SEP] "
          "kept), drawn afresh every step (0: whole examples, the paper)", min=0.0),
    Field("synthetic_noise", "Synthetic-embedding noise", "Outer loop and evaluation", "float",
          "beyond the paper: each outer step's inner steps see the synthetic embeddings plus Gaussian noise of "
          "this std (units of their own std at that step); the clean data is updated and scored (0: the paper)",
          min=0.0),
    Field("model_noise", "Pre-trained-weight noise", "Outer loop and evaluation", "float",
          "beyond the paper: each outer step starts from the pre-trained weights plus Gaussian noise of this share "
          "of each tensor's std; scoring learners start from the exact weights (0: the paper)", min=0.0),
    Field("eval_at_start", "Evaluate at step 0", "Outer loop and evaluation", "bool"),
    Field("baselines", "Baselines (majority, random real k-shot)", "Outer loop and evaluation", "bool"),
    Field("inner_memory", "Inner-loop memory", "Outer loop and evaluation", "choice",
          "store every inner step, or recompute (memory flat in T); auto recomputes for T > 5",
          options=("auto", "store", "recompute")),
    Field("recompute_copies", "Parameter copies kept when recomputing", "Outer loop and evaluation", "int",
          "0 keeps the least memory but recomputes the most inner steps; each copy costs one set of "
          "model weights", min=0),
    Field("max_minutes", "Time budget in minutes (0 = none)", "Outer loop and evaluation", "float", min=0.0),
    Field("save_every_minutes", "Save a resume point every N minutes (0 = only at evaluations)",
          "Outer loop and evaluation", "float", 5.0, "a killed run resumes from its last resume point", min=0.0),
    Field("seed", "Seed", "Outer loop and evaluation", "int"),
)

# A setting the engine does not have (an older engine) is left out of the form.
FIELDS = tuple(f for f in FIELDS if f.section not in ("Distilled data", "Outer loop and evaluation")
               or f.key in DistilledConfig.__dataclass_fields__ or f.key in DistillConfig.__dataclass_fields__)
_BY_KEY = {f.key: f for f in FIELDS}


def missing_settings() -> list[str]:
    """Settings of the method (DistilledConfig, DistillConfig) that the form does not offer."""
    return [k for k in (*DistilledConfig.__dataclass_fields__, *DistillConfig.__dataclass_fields__) if k not in _BY_KEY]


def preset_names() -> list[str]:
    return list(PRESETS)


def preset_widget_values(name: str) -> dict[str, Any]:
    """Every form field's value under a preset (what the preset picker fills in)."""
    values = preset_values(name)
    out = {}
    for f in FIELDS:
        key = "name" if f.key == "model" else f.key
        v = values[_PRESET_SECTION[f.section]][key]
        out[f.key] = 0 if v is None and f.key in _ZERO_IS_NONE else v
    return out


def defaults(preset: str = DEFAULT_PRESET) -> dict[str, Any]:
    """Every widget's starting value, including the data source widgets of the page."""
    return {**preset_widget_values(preset), "preset": preset, "task": default_task(),
            "data_dir": default_data_dir() or "", "text_columns": "sentence", "label_column": "label",
            "train_path": "", "eval_path": ""}


def task_options() -> list[str]:
    return sorted(TASKS)


def _text(v) -> str | None:
    return None if v is None or not str(v).strip() else str(v).strip()


def config_from_values(values: dict[str, Any], source: str = "task") -> RunConfig:
    """Build the run config from widget values over their preset. source: task | files | upload.

    A value the form does not hold comes from the preset (values["preset"], default cpu). For uploads
    the file paths are filled in later (jobs.start_distill stages the files). Range checks are left to
    RunConfig.validate(), whose messages name the setting.
    """
    preset = values.get("preset") or DEFAULT_PRESET
    v = {**defaults(preset), **values}
    settings = preset_values(preset)
    cols = [c.strip() for c in str(v["text_columns"] or "").split(",") if c.strip()]
    custom = source in ("files", "upload")
    settings["data"].update(
        task=None if custom else v["task"], data_dir=_text(v["data_dir"]),
        train_file=_text(v["train_path"]) if source == "files" else None,
        eval_file=_text(v["eval_path"]) if source == "files" else None,
        text_columns=cols if custom else [], label_column=_text(v["label_column"]) if custom else None)
    for f in FIELDS:
        section, key = _PRESET_SECTION[f.section], "name" if f.key == "model" else f.key
        value = _cast(f.key, v[f.key])
        settings[section][key] = None if f.key in _ZERO_IS_NONE and value in (0, 0.0) else value
    settings["model"]["name"] = _text(settings["model"]["name"]) or BUNDLED_MODEL
    settings["data"]["seed"] = settings["distill"]["seed"]      # one seed in the form, as on the command line
    return RunConfig.from_dict({**settings, "preset": preset})


def _cast(key: str, value: Any) -> Any:
    kind = _BY_KEY[key].kind
    cast = {"int": int, "float": float, "bool": bool}.get(kind)
    return value if cast is None else cast(value)


def values_from_config(config: dict) -> dict[str, Any]:
    """The widget values that rebuild a saved run's config (to start a similar run)."""
    out = {"preset": config.get("preset") or DEFAULT_PRESET}
    for part in ("data", "model", "distilled", "distill"):
        for k, val in (config.get(part) or {}).items():
            key = "model" if (part, k) == ("model", "name") else k
            if key in _BY_KEY or key in ("task", "data_dir"):
                out[key] = (0 if val is None and key in _ZERO_IS_NONE else val)
    return out

