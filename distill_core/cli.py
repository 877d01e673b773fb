"""Command line: `python -m distill_core distill|evaluate|baseline|study|sweep|inspect` for headless runs."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from .errors import UserError
from .presets import DEFAULT_PRESET, PRESETS, SCHEDULES, defaults_text, preset_values

__all__ = ["main", "build_parser"]


# flag dest -> (section, setting) for every setting a preset fills; such flags default to None ("take
# the preset's value"), and --help names each preset's default
SETTING_FLAGS: dict[str, tuple[str, str]] = {}


def _setting(g, flag: str, section: str, key: str, help: str = "", **kw) -> None:
    action = g.add_argument(flag, default=None, help=f"{help} ({defaults_text(section, key)})".strip(), **kw)
    SETTING_FLAGS[action.dest] = (section, key)


def _switch(g, flag: str, section: str, key: str, help: str) -> None:
    """An on/off setting: --flag and --no-flag, None (the preset's value) when neither is given."""
    _setting(g, flag, section, key, help, action=argparse.BooleanOptionalAction)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--preset", default=DEFAULT_PRESET, choices=sorted(PRESETS),
                   help="where every default comes from (distill_core/presets.py): cpu, the fast CPU recipe "
                        "(beyond the paper: real-example and model-attention inits), or paper, METHOD.md exactly; "
                        "explicit flags override it")
    g.add_argument("--task", help="registered task: sst2, mrpc, qnli, ag_news, rte, mnli, qqp, demo (default sst2)")
    g.add_argument("--data-dir", help="directory with <task>/<split>.parquet|csv|tsv|jsonl (env DISTILL_DATA_DIR); "
                                      "the Hugging Face hub is tried next")
    g.add_argument("--train-file", help="custom data: train file (csv/tsv/jsonl/parquet), instead of --task")
    g.add_argument("--eval-file", help="custom data: evaluation file")
    g.add_argument("--text-column", action="append", default=[],
                   help="custom data: text column; give twice for sentence pairs")
    g.add_argument("--label-column", help="custom data: label column (strings or integers)")
    _setting(g, "--max-length", "data", "max_length", "max tokens per real example", type=int)
    _setting(g, "--real-batch", "data", "real_batch_size", "real mini-batch size of the outer loss", type=int)
    _setting(g, "--train-rows", "data", "train_rows", "use at most this many random train rows", type=int)
    _setting(g, "--train-min-words", "data", "train_min_words", "beyond the paper: keep only train rows of at "
             "least this many words, before the dev split is carved (SST-2's train split is mostly short phrases, "
             "its validation split whole sentences)", type=int)
    _setting(g, "--eval-rows", "data", "eval_rows", "validate (or score) on at most this many random rows; 0: all",
             type=int)
    g.add_argument("--no-hub", action="store_true", help="never try the Hugging Face hub")
    _setting(g, "--dev-fraction", "data", "dev_fraction", "share of train held out (stratified, seeded) as the dev "
             "split that periodic validation, best and grids use; 0: none, select on the evaluation split",
             type=float)
    _setting(g, "--dev-max-rows", "data", "dev_max_rows", "at most this many dev rows", type=int)
    _switch(g, "--dev-disjoint", "data", "dev_disjoint", "beyond the paper: carve dev only from rows no other train "
            "row contains, and leave the rows inside them out of training (SST-2's train split holds every phrase of "
            "each sentence, so a row carved at random sits inside a train row 9 times in 10; disjoint, dev is whole "
            "sentences unseen in training, like validation)")


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    _setting(g, "--model", "model", "name", "BERT-family checkpoint (hub name or path)")
    _setting(g, "--device", "model", "device", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps")
    _setting(g, "--dtype", "model", "dtype", "", choices=["float32", "float64", "bfloat16"])
    _setting(g, "--pooling", "model", "pooling", "what the head reads: cls, the pooler at [CLS] (the paper), or "
             "mean, beyond the paper: the mean of the last layer over the tokens, the pooling sentence-transformers "
             "models such as the bundled one were trained with", choices=["cls", "mean"])
    g.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")


def _preset_values(a) -> dict:
    """The preset's settings with every explicitly given flag applied."""
    values = preset_values(getattr(a, "preset", DEFAULT_PRESET))
    for dest, (section, key) in SETTING_FLAGS.items():
        v = getattr(a, dest, None)
        if v is not None:
            values[section][key] = v
    d = values["data"]
    if d["eval_rows"] == 0:
        d["eval_rows"] = None
    if getattr(a, "train_file", None) or getattr(a, "eval_file", None):
        d.update(task=None, train_file=a.train_file, eval_file=a.eval_file, text_columns=list(a.text_column),
                 label_column=a.label_column)
    elif getattr(a, "task", None):
        d["task"] = a.task
    if getattr(a, "data_dir", None):
        d["data_dir"] = a.data_dir
    if getattr(a, "no_hub", False):
        d["allow_hub"] = False
    if getattr(a, "seed", None) is not None:
        d["seed"] = a.seed           # the data's seed (caps, dev split) follows the run's --seed
    return values


def _data_config(a):
    from .data import DataConfig

    return DataConfig(**_preset_values(a)["data"])


def _model_config(a):
    from .learner import ModelConfig

    return ModelConfig(**_preset_values(a)["model"])


def build_parser() -> argparse.ArgumentParser:
    from .distilled import DistilledConfig
    from .distiller import DistillConfig

    dd, oc = DistilledConfig(), DistillConfig()
    parser = argparse.ArgumentParser(prog="python -m distill_core",
                                     description="Dataset distillation with attention labels for BERT classifiers.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("distill", help="learn distilled data (the outer loop)")
    _add_data_args(p)
    _add_model_args(p)
    g = p.add_argument_group("distilled data")
    _setting(g, "--seq-len", "distilled", "seq_len", "positions L of each synthetic sample", type=int)
    _setting(g, "--samples-per-class", "distilled", "samples_per_class", type=int)
    _setting(g, "--inner-steps", "distilled", "inner_steps", "T inner SGD steps", type=int)
    g.add_argument("--different-data-per-step", action="store_true", default=None,
                   help="step t uses its own share of the samples (samples-per-class must be a multiple of T) "
                        f"({defaults_text('distilled', 'different_data_per_step')}: the same data each step)")
    SETTING_FLAGS["different_data_per_step"] = ("distilled", "different_data_per_step")
    _setting(g, "--label-type", "distilled", "label_type", choices=["hard", "soft", "unrestricted"])
    _setting(g, "--attention-labels", "distilled", "attention_labels", choices=["none", "cls", "all"])
    _setting(g, "--attention-weight", "distilled", "attention_loss_weight", "lambda of L_attn", type=float)
    _setting(g, "--inner-lr-init", "distilled", "inner_lr_init", type=float)
    _setting(g, "--inner-lr-max", "distilled", "inner_lr_max", "bound the learned inner lr: max * sigmoid(raw) "
             "instead of the paper's unbounded softplus(raw) (beyond the paper); 0 or None: unbounded", type=float)
    _switch(g, "--split-inner-lr", "distilled", "split_inner_lr", "T > 1: divide --inner-lr-init and --inner-lr-max "
            "by T, so the T steps start with and are bounded by the movement of one step; at one step's lr each, the "
            "unrolled hypergradient explodes (beyond the paper, which inits every step alike)")
    _setting(g, "--inner-lr-groups", "distilled", "inner_lr_groups", "one learned inner lr per step (one: the "
             "paper), or one per step and parameter group: head (the encoder; the pooler and classifier) or layer "
             "(embeddings, each layer, the head), as MAML++'s per-layer lrs (beyond the paper)",
             choices=["one", "head", "layer"])
    _setting(g, "--init", "distilled", "init", "random normal (the paper) or word embeddings of real train "
             "examples (beyond the paper): one example padded to L (real), or examples of the class laid end to end until L "
             "is full (real-fill)", choices=["random", "real", "real-fill"])
    _setting(g, "--attention-init", "distilled", "attention_init", "attention labels start random N(0,1) (the "
             "paper) or at the pre-trained model's own attention on the initial sample (beyond the paper)",
             choices=["random", "model"])
    _setting(g, "--feature-labels", "distilled", "feature_labels", "pooled: each sample also learns a target for "
             "the pooled output the head reads (starting at the model's own), and the inner loss adds mu times its "
             "squared distance; it shares the labels' outer lr (beyond the paper); none: the paper",
             choices=["none", "pooled"])
    _setting(g, "--feature-weight", "distilled", "feature_loss_weight", "mu of the feature labels' loss", type=float)
    _setting(g, "--embed-max-norm", "distilled", "embed_max_norm", "beyond the paper: each synthetic token vector "
             "enters the model at most at this norm (a real word embedding's is ~1; 0: no cap, the paper). "
             "Uncapped, they grow ~50x over a long run and drown the position embeddings, so the data loses "
             "word order", type=float)
    g = p.add_argument_group("outer loop")
    _setting(g, "--outer-steps", "distill", "outer_steps", type=int)
    _setting(g, "--optimizer", "distill", "optimizer", choices=["adam", "adamw"])
    g.add_argument("--lr", type=float,
                   help="outer learning rate of every part that has no --lr-<part> of its own")
    _setting(g, "--lr-embeds", "distill", "lr_embeds", "outer lr of the embeddings", type=float)
    _setting(g, "--lr-labels", "distill", "lr_labels", "outer lr of the labels", type=float)
    _setting(g, "--lr-attention", "distill", "lr_attention", "outer lr of the attention labels", type=float)
    _setting(g, "--lr-inner-lr", "distill", "lr_inner_lr", "outer lr of the learned inner lr's raw parameter "
             "(0 keeps the inner lr at its init)", type=float)
    _setting(g, "--meta-batch", "distill", "meta_batch", "K (real batch, head initialisation) draws per outer step, "
             "their hypergradients averaged before clipping (beyond the paper's K=1; costs K times a step)", type=int)
    _setting(g, "--average", "distill", "average", "validate, save and return an exponential moving average of "
             "the distilled data with this decay, e.g. 0.99 (beyond the paper; 0: the last iterate, as the paper)",
             type=float)
    _setting(g, "--teacher-weight", "distill", "teacher_weight", "beyond the paper: the outer loss's target is "
             "(1 - w) x the gold label + w x a teacher's class probabilities, the teacher being the same model "
             "fine-tuned on the train split for --teacher-steps batches (trained once, cached in "
             "<runs dir>/.teachers or $DISTILL_TEACHER_DIR; its cost is reported in the run's start event); "
             "0: gold labels, the paper", type=float)
    _setting(g, "--teacher-steps", "distill", "teacher_steps", "batches of 32 of ordinary fine-tuning (AdamW 5e-5) "
             "that make the teacher of --teacher-weight", type=int)
    _setting(g, "--weight-decay", "distill", "weight_decay", type=float)
    _setting(g, "--warmup-ratio", "distill", "warmup_ratio", type=float)
    _setting(g, "--schedule", "distill", "schedule", "after warm-up: linear decay to 0 (the paper) or constant",
             choices=list(SCHEDULES))
    _setting(g, "--grad-clip", "distill", "grad_clip", "0 disables", type=float)
    _setting(g, "--eval-every", "distill", "eval_every", "0: only at start and end", type=int)
    _setting(g, "--eval-learners", "distill", "eval_learners", type=int)
    _setting(g, "--eval-precision", "distill", "eval_precision", "bfloat16: score under bf16 autocast (faster on "
             "CPUs with bf16 units; fine-tuning stays fp32)", choices=["float32", "bfloat16"])
    _setting(g, "--real-precision", "distill", "real_precision", "beyond the paper: bfloat16 runs each outer "
             "step's real-batch pass (forward and first-order backward) under bf16 autocast, while the synthetic "
             "passes, differentiated twice, stay fp32: about 1.2x faster steps on CPUs with bf16 units (much slower "
             "on those without); hypergradient cosine to fp32 0.9997 or more on SST-2", choices=["float32", "bfloat16"])
    _setting(g, "--real-word-dropout", "distill", "real_word_dropout", "beyond the paper: each outer step's real "
             "examples lose this share of their tokens ([CLS] and [SEP] kept), drawn afresh every step, so the "
             "distilled data leans less on the train rows' exact wording (0: whole examples, the paper)", type=float)
    _setting(g, "--synthetic-noise", "distill", "synthetic_noise", "beyond the paper: each outer step's inner "
             "steps see the synthetic embeddings plus Gaussian noise of this std, in units of the embeddings' own "
             "std at that step; the clean data is what is updated, scored and saved (0: the paper)", type=float)
    _setting(g, "--model-noise", "distill", "model_noise", "beyond the paper: each outer step starts from the "
             "pre-trained weights plus Gaussian noise of this share of each tensor's std, so the data must teach "
             "nearby models too; learners that score it start from the exact weights (0: the paper)", type=float)
    g.add_argument("--no-eval-at-start", action="store_true", help="(default: evaluate at step 0)")
    g.add_argument("--no-baselines", action="store_true", help="skip majority/random-k-shot baselines "
                   "(default: drawn beside the curve)")
    _setting(g, "--max-minutes", "distill", "max_minutes", "wall-clock budget; the run stops cleanly when spent",
             type=float)
    _setting(g, "--save-every-minutes", "distill", "save_every_minutes",
             "also commit a resume point this often (0: only at evaluations and at the end)", type=float)
    _setting(g, "--inner-memory", "distill", "inner_memory", "keep every inner step's parameters (fast) or "
             "recompute them (memory flat in T); auto recomputes for T > 5", choices=["auto", "store", "recompute"])
    _setting(g, "--recompute-copies", "distill", "recompute_copies", "recompute mode: parameter copies kept besides "
             "theta_0; 0 uses the least memory (about 1.2x that of T=1) but recomputes the most steps", type=int)
    _setting(g, "--seed", "distill", "seed", type=int)
    g.add_argument("--seeds", type=int, default=1,
                   help="distil this many times, with seeds --seed, --seed+1, ..., into OUT-seedN each; "
                        "evaluate them together with `evaluate OUT-seed0 OUT-seed1 ...`")
    g.add_argument("--out", help="run directory: a bare name goes inside the runs directory ($DISTILL_RUNS_DIR or runs/), a path is used as given but never an existing directory holding other files (default: runs directory plus a generated name)")
    g.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its last resume point; flags that do not change the method "
                        f"({', '.join('--' + f.replace('_', '-') for f in RESUME_OVERRIDES)}) apply, others are "
                        "refused")

    p = sub.add_parser("evaluate", help="fine-tune N fresh learners on a run's distilled data",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run", nargs="+",
                   help="run directory (or a run name), or a distilled-data .safetensors file (its header names "
                        "the task and model; --data-dir says where the data is); several runs (the seeds of one "
                        "setting) print, besides each, the mean and std over seeds and the pooled learner std")
    p.add_argument("--learners", type=int, default=100)
    p.add_argument("--checkpoint", default="last", help="last, best or step-NNNNNN (runs only)")
    p.add_argument("--split", help="the task's evaluation split (default) or dev (the selection split the run "
                                   "validated on)")
    p.add_argument("--seed", type=int, default=1234, help="head seeds seed..seed+N-1")
    p.add_argument("--data-dir", help="override the run's data directory")
    p.add_argument("--eval-rows", type=int,
                   help="score on this many random evaluation rows (default: the whole evaluation split, "
                        "whatever cap the run used for its periodic validation)")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="bfloat16: score under bf16 autocast (faster on CPUs with bf16 units)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int)

    p = sub.add_parser("baseline", help="majority, random real k-shot, or full-data fine-tuning",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    _add_data_args(p)
    _add_model_args(p)
    p.add_argument("--kind", required=True, choices=["majority", "random-kshot", "random-kshot-tuned", "full"],
                   help="random-kshot-tuned: the inner lr is chosen on the dev split's loss over --lr-grid, "
                        "per (k, inner steps), then scored like random-kshot")
    p.add_argument("--lr-grid", type=float, nargs="+", help="random-kshot-tuned: inner lrs to try "
                   "(default 0.01 0.03 0.1 0.3 1.0)")
    p.add_argument("--learners", type=int, default=20)
    p.add_argument("--k", type=int, default=1, help="random-kshot: real examples per class")
    p.add_argument("--inner-steps", type=int, default=1, help="random-kshot: SGD steps")
    p.add_argument("--different-data-per-step", action="store_true")
    p.add_argument("--inner-lr", type=float, default=DistilledConfig().inner_lr_init, help="random-kshot: SGD lr")
    p.add_argument("--precision", choices=["float32", "bfloat16"], default="float32",
                   help="random-kshot: score under bf16 autocast")
    p.add_argument("--epochs", type=float, default=3.0,
                   help="full: at most this many epochs, stopped early on the dev split's score")
    p.add_argument("--full-learners", type=int, default=3, help="full: learners (seeds --seed, --seed+1, ...)")
    p.add_argument("--check-every", type=int, default=200, help="full: batches between dev checks")
    p.add_argument("--patience", type=int, default=3, help="full: dev checks without improvement before stopping")
    p.add_argument("--full-steps", type=int,
                   help="full: instead, exactly this many AdamW steps with one learner and no dev selection")
    p.add_argument("--full-lr", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--out", help="also write the result JSON to this file")

    from .study import add_parser as add_study_parser
    from .sweep import add_parser as add_sweep_parser

    add_study_parser(sub)
    add_sweep_parser(sub)

    p = sub.add_parser("inspect", help="nearest tokens, labels, learned lrs and attention KL of a run")
    p.add_argument("run", help="run directory")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--checkpoint", default="last")
    p.add_argument("--data-dir", help="override the run's data directory")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.add_argument("--device", default="auto")
    p.add_argument("--anatomy", action="store_true",
                   help="instead: score learners with each part's inner-step move undone in turn (head only, "
                        "encoder only, all but each layer; beyond the paper) and record it in the run's results")
    p.add_argument("--learners", type=int, default=4, help="--anatomy: fresh heads (seeds --seed, --seed+1, ...)")
    p.add_argument("--seed", type=int, default=1234, help="--anatomy: first head seed (evaluation's default)")
    p.add_argument("--split", help="--anatomy: dev or the task's evaluation split (default)")
    p.add_argument("--eval-rows", type=int, help="--anatomy: score only the first N rows of the split")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    return parser


def _set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def run_config_from_args(a):
    """The RunConfig that `distill`'s flags describe: the preset, then every explicit flag (also the benches')."""
    from .distiller import RunConfig

    values = _preset_values(a)
    if getattr(a, "lr", None) is not None:     # --lr: every part without its own --lr-<part>
        for part in ("lr_embeds", "lr_labels", "lr_attention", "lr_inner_lr"):
            if getattr(a, part, None) is None:
                values["distill"][part] = a.lr
    if getattr(a, "no_eval_at_start", False):
        values["distill"]["eval_at_start"] = False
    if getattr(a, "no_baselines", False):
        values["distill"]["baselines"] = False
    return RunConfig.from_dict({**values, "preset": a.preset})


# Settings --resume may change: they change how long, where and how often, never what is learned.
RESUME_OVERRIDES = ("outer_steps", "device", "threads", "eval_every", "eval_learners", "eval_precision",
                    "save_every_minutes", "max_minutes", "inner_memory", "recompute_copies", "data_dir")
# the distill flags that are not one preset setting each (SETTING_FLAGS maps those): what each sets
_OTHER_FLAG_FIELDS = {"lr": [("distill", f) for f in ("lr_embeds", "lr_labels", "lr_attention", "lr_inner_lr")],
                      "seed": [("distill", "seed"), ("data", "seed")],
                      "no_eval_at_start": [("distill", "eval_at_start")], "no_baselines": [("distill", "baselines")],
                      "no_hub": [("data", "allow_hub")], "task": [("data", "task")], "data_dir": [("data", "data_dir")],
                      "train_file": [("data", "train_file")], "eval_file": [("data", "eval_file")],
                      "text_column": [("data", "text_columns")], "label_column": [("data", "label_column")]}


def explicit_flags(argv: list[str], parser: argparse.ArgumentParser) -> set[str]:
    """The dests of the `distill` options written on the command line (defaults do not count)."""
    sub = next(a for a in parser._subparsers._group_actions[0].choices.values() if a.prog.endswith(" distill"))
    found = set()
    for token in argv:
        opt = token.split("=", 1)[0]
        action = sub._option_string_actions.get(opt)
        if action is not None:
            found.add(action.dest)
    return found


def resume_config(saved, asked, explicit: set[str]):
    """The saved run's config with the allowed overrides applied; refuses method changes, listing them."""
    sections = {"data": saved.data, "model": saved.model, "distilled": saved.distilled, "distill": saved.distill}
    asked_sections = {"data": asked.data, "model": asked.model, "distilled": asked.distilled,
                      "distill": asked.distill}
    refused = []
    for dest in sorted(explicit - {"resume", "out", "threads"}):
        targets = _OTHER_FLAG_FIELDS.get(dest) or ([SETTING_FLAGS[dest]] if dest in SETTING_FLAGS else [])
        for sec, f in targets:
            old, new = getattr(sections[sec], f), getattr(asked_sections[sec], f)
            if old == new:
                continue
            if f in RESUME_OVERRIDES:
                setattr(sections[sec], f, new)
            else:
                refused.append(f"--{dest.replace('_', '-')} ({f}: {old!r} in the run, {new!r} asked)")
    if refused:
        raise UserError("--resume cannot change the method of a run; refused: " + "; ".join(refused) +
                        f". Allowed: {', '.join('--' + f.replace('_', '-') for f in RESUME_OVERRIDES)}")
    saved.validate()
    return saved


def _cmd_distill(a, argv: list[str] | None = None) -> int:
    from .distiller import RunConfig
    from .paths import cli_out_path
    from .runs import RunDir, default_runs_dir, new_run_name, write_json

    _set_threads(a.threads)
    cfg = run_config_from_args(a)
    world, cfg.model.device = _join_world(cfg.model.device)
    if a.resume and not a.out:
        raise UserError("--resume needs --out naming the run directory")
    if not a.out:
        from .parallel import gather_json

        out = Path(gather_json(str(default_runs_dir() / new_run_name(cfg.data.task or "custom")))[0])  # rank 0's
    else:   # rank 0 alone checks what --out holds (and creates it)
        out = cli_out_path(a.out, default_runs_dir(), a.resume, check_contents=world.is_writer)
    if a.resume:
        run = RunDir(out).require()
        cfg = resume_config(RunConfig.from_dict(run.config()), cfg, explicit_flags(argv or [], build_parser()))
        if world.is_writer:
            write_json(run.config_path, {**run.config(), **cfg.to_dict()})   # the run records what it became
    if a.seeds < 1:
        raise UserError(f"--seeds must be >= 1, got {a.seeds}")
    if a.seeds > 1 and a.resume:
        raise UserError("--resume continues one run; resume each seed's run (OUT-seedN) on its own")
    if a.seeds == 1:
        return _distill_one(cfg, out, a.resume)
    import copy

    status = 0
    for k in range(a.seeds):   # the data seed (dev split, caps) stays: only the distillation's seed moves
        seeded = copy.deepcopy(cfg)
        seeded.distill.seed = cfg.distill.seed + k
        status = max(status, _distill_one(seeded, out.with_name(f"{out.name}-seed{seeded.distill.seed}"), False))
    return status


def _distill_one(cfg, out: Path, resume: bool) -> int:
    """One distillation with a progress bar; Ctrl-C and SIGTERM stop it cleanly after the current step."""
    from tqdm import tqdm

    from .distiller import Distiller

    distiller = Distiller(cfg, run_dir=out, resume=resume)
    writer = distiller.world.is_writer    # data-parallel: rank 0 alone reports
    bar = tqdm(total=cfg.distill.outer_steps, initial=distiller.step, desc="distill", unit="step",
               file=sys.stderr, dynamic_ncols=True, disable=not writer)
    metric = distiller.prep.task.spec.primary_metric
    last_acc = {}

    from .views.curves import format_inner_lrs

    def on_event(e: dict) -> None:
        if e["type"] == "step":
            bar.update(1)
            bar.set_postfix(loss=f"{e['real_loss']:.3f}", lr=format_inner_lrs(e["inner_lrs"][:1], e.get("inner_lr_groups")),
                            **last_acc)
        elif e["type"] == "eval":
            m = e["metrics"][metric]
            last_acc[metric[:3]] = f"{m['mean']:.1f}±{m['std']:.1f}"
            bar.write(f"step {e['step']}: {metric} {m['mean']:.2f} ± {m['std']:.2f} (n={m['n']}, {e['seconds']:.0f}s)")
        elif e["type"] == "baseline":
            m = e["metrics"][metric]
            bar.write(f"baseline {e['name']}: {metric} {m['mean']:.2f} ± {m['std']:.2f}")
        elif e["type"] == "error":
            bar.write(f"error: {e['message']} (the last good checkpoint is kept)")

    distiller.add_callback(on_event)
    previous = signal.getsignal(signal.SIGINT)

    def on_interrupt(signum, frame):  # first Ctrl-C stops cleanly after the current step
        bar.write("stopping after this step (Ctrl-C again to abort)")
        distiller.stop()
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, lambda *_: (bar.write("SIGTERM: stopping after this step"), distiller.stop()))
    summary = distiller.run_loop()
    bar.close()
    if not writer:
        return 1 if summary["status"] == "error" else 0
    if distiller.prep.task.is_demo:
        print("note: this run used the built-in demo dataset; its numbers say nothing about real benchmarks",
              file=sys.stderr)
    print(json.dumps({"run": str(out), **summary}))
    return 1 if summary["status"] == "error" else 0


def _load_for_run(run_path: str, checkpoint: str, data_dir: str | None, device: str, eval_rows: int | None = None):
    """A run's config, prepared data/learner and the chosen distilled checkpoint."""
    from .distilled import DistilledData
    from .distiller import RunConfig, prepare
    from .runs import RunDir

    from .paths import cli_run_path
    from .runs import default_runs_dir

    import os

    study = os.environ.get("DISTILL_STUDY_DIR") or Path(__file__).resolve().parent.parent / "docs" / "reproduction"
    study_runs = Path(study) / "runs"
    run = RunDir(cli_run_path(run_path, [default_runs_dir(), study_runs])).require()
    cfg = RunConfig.from_dict(run.config())
    if data_dir:
        cfg.data.data_dir = data_dir
    cfg.data.eval_rows = eval_rows
    cfg.model.device = device
    path = run.checkpoint(checkpoint)
    if not path.exists():
        raise UserError(f"{run.path} has no checkpoint {checkpoint!r}; available: "
                        f"{', '.join(run.list_checkpoints()) or 'none'}")
    prep = prepare(cfg)
    distilled = DistilledData.load(path, device=prep.learner.device, dtype=prep.learner.dtype,
                                   expect=prep.learner.fingerprint())
    return run, cfg, prep, distilled


def _load_bare_file(path: Path, data_dir: str | None, device: str, eval_rows: int | None):
    """A distilled-data file on its own: its header names the task and the model."""
    from .data import DataConfig
    from .distilled import DistilledData
    from .distiller import RunConfig, prepare
    from .learner import ModelConfig

    meta = DistilledData.load(path).meta
    if not meta.get("task") or meta.get("task") == "custom":
        raise UserError(f"{path} does not name a registered task in its header; evaluate its run directory instead")
    cfg = RunConfig(data=DataConfig(task=meta["task"], data_dir=data_dir, eval_rows=eval_rows),
                    model=ModelConfig(name=meta.get("model") or ModelConfig().name, device=device,
                                      pooling=meta.get("pooling", "cls")))
    prep = prepare(cfg)
    distilled = DistilledData.load(path, device=prep.learner.device, dtype=prep.learner.dtype,
                                   expect=prep.learner.fingerprint())
    return None, cfg, prep, distilled


def _join_world(device: str):
    """The data-parallel ranks torchrun/srun started (a world of one otherwise) and this rank's device."""
    from .parallel import init_world, rank_device

    world = init_world(device)
    return world, rank_device(device, world)


def _cmd_evaluate(a) -> int:
    from .evaluation import aggregate_seeds

    _set_threads(a.threads)
    world, a.device = _join_world(a.device)
    a.world = world
    say = print if world.is_writer else (lambda *_, **__: None)
    if len(a.run) == 1:
        say(json.dumps(_evaluate_one(a, a.run[0])["metrics"]))
        return 0
    results = [_evaluate_one(a, r) for r in a.run]
    aggregate = aggregate_seeds([r["per_learner"] for r in results])
    say(json.dumps({"runs": a.run, "per_run": [r["metrics"] for r in results], "across_seeds": aggregate}))
    return 0


def _evaluate_one(a, run_arg: str) -> dict:
    from tqdm import tqdm

    from .evaluation import EvalConfig, evaluate_distilled

    target = Path(run_arg)
    if target.is_file() and target.suffix == ".safetensors":
        run, cfg, prep, distilled = _load_bare_file(target, a.data_dir, a.device, a.eval_rows)
    else:
        run, cfg, prep, distilled = _load_for_run(run_arg, a.checkpoint, a.data_dir, a.device, a.eval_rows)
    split, encoded = prep.split(a.split, cfg.data.is_custom)
    world = getattr(a, "world", None)
    writer = world is None or world.is_writer
    bar = tqdm(total=len(range(0, a.learners, world.size if world else 1)), desc="evaluate", unit="learner",
               file=sys.stderr, dynamic_ncols=True, disable=not writer)
    result = evaluate_distilled(prep.learner, distilled, encoded, prep.task.spec.metrics,
                                EvalConfig(learners=a.learners, seed=a.seed, precision=a.precision),
                                progress=lambda done, total: bar.update(1), world=world)
    bar.close()
    if run is not None and writer:
        run.add_evaluation({"checkpoint": a.checkpoint, "learners": a.learners, "seed": a.seed,
                            "precision": a.precision, "eval_rows": len(encoded), "split": split,
                            "metrics": result["metrics"], "per_learner": result["per_learner"],
                            "seconds": result["seconds"], "step": distilled.meta.get("step"),
                            "demo": prep.task.is_demo})
    return result


def _cmd_baseline(a) -> int:
    from tqdm import tqdm

    from .distiller import RunConfig, prepare
    from .evaluation import EvalConfig, full_finetune_baseline, majority_baseline, random_kshot_baseline

    _set_threads(a.threads)
    cfg = RunConfig(data=_data_config(a), model=_model_config(a))
    if a.eval_rows is None:
        cfg.data.eval_rows = None   # a reported number: the whole evaluation split unless --eval-rows says otherwise
    cfg.data.validate()
    prep = prepare(cfg)
    spec = prep.task.spec
    if a.kind == "majority":
        result = majority_baseline(prep.task.train.labels, prep.eval, spec.metrics, spec.num_labels)
    elif a.kind == "random-kshot-tuned":
        from .evaluation import KSHOT_LR_GRID, tuned_kshot_baseline

        if prep.dev is None:
            raise UserError("random-kshot-tuned needs a dev split (--dev-fraction > 0 and a train split of 50+ rows)")
        bar = tqdm(total=a.learners, desc="random-kshot-tuned", unit="learner", file=sys.stderr)
        result = tuned_kshot_baseline(prep.learner, prep.train, prep.dev, prep.eval, spec.metrics, a.k,
                                      a.inner_steps, a.different_data_per_step, tuple(a.lr_grid or KSHOT_LR_GRID),
                                      config=EvalConfig(learners=a.learners, seed=a.seed, precision=a.precision),
                                      progress=lambda d, t: bar.update(1))
        bar.close()
        result.pop("per_learner", None)
        result["dev_loss"] = {str(k): v for k, v in result["dev_loss"].items()}
    elif a.kind == "random-kshot":
        if a.k < 1 or a.inner_steps < 1 or a.learners < 1:
            raise UserError("--k, --inner-steps and --learners must be >= 1")
        bar = tqdm(total=a.learners, desc="random-kshot", unit="learner", file=sys.stderr)
        result = random_kshot_baseline(prep.learner, prep.train, prep.eval, spec.metrics, a.k, a.inner_steps,
                                       a.inner_lr, a.different_data_per_step, EvalConfig(learners=a.learners, seed=a.seed, precision=a.precision),
                                       progress=lambda d, t: bar.update(1))
        bar.close()
        result.pop("per_learner", None)
    elif a.full_steps is None:
        from .evaluation import converged_finetune_baseline

        if prep.dev is None:
            raise UserError("full fine-tuning to convergence needs a dev split (--dev-fraction > 0), or --full-steps")
        bar = tqdm(total=a.full_learners, desc="full fine-tuning", unit="learner", file=sys.stderr)
        result = converged_finetune_baseline(prep.learner, prep.train, prep.dev, prep.eval, spec.metrics,
                                             epochs=a.epochs, batch_size=cfg.data.real_batch_size, lr=a.full_lr,
                                             learners=a.full_learners, check_every=a.check_every,
                                             patience=a.patience, seed=a.seed, progress=lambda d, t: bar.update(1))
        bar.close()
        result.pop("per_learner", None)
    else:
        if a.full_steps < 1:
            raise UserError("--full-steps must be >= 1")
        bar = tqdm(total=a.full_steps, desc="full fine-tuning", unit="batch", file=sys.stderr)
        result = full_finetune_baseline(prep.learner, prep.train, prep.eval, spec.metrics, steps=a.full_steps,
                                        batch_size=cfg.data.real_batch_size, lr=a.full_lr, seed=a.seed,
                                        progress=lambda d, t: bar.update(1))
        bar.close()
    record = {"kind": a.kind, "task": spec.name, "demo": spec.is_demo, "eval_rows": len(prep.eval), **result}
    if a.out:
        from .runs import write_json

        write_json(Path(a.out), record)
    print(json.dumps(record["metrics"]))
    return 0


def _cmd_inspect(a) -> int:
    from .inspection import inspect_summary

    if a.top_k < 1:
        raise UserError("--top-k must be >= 1")
    if a.anatomy:
        return _cmd_anatomy(a)
    run, cfg, prep, distilled = _load_for_run(a.run, a.checkpoint, a.data_dir, a.device)
    summary = inspect_summary(prep.learner, distilled, a.top_k)
    if a.json:
        print(json.dumps(summary))
        return 0
    print(f"run {run.path}  checkpoint {a.checkpoint} (step {distilled.meta.get('step')})  "
          f"task {prep.task.spec.name}{'  [demo data]' if prep.task.is_demo else ''}")
    from .views.curves import format_inner_lrs
    from .views.tokens import order_caption

    print("learned inner lrs: " + format_inner_lrs(summary["inner_lrs"], summary.get("inner_lr_groups"), digits=4))
    for s in summary["samples"]:
        print(f"\nsample {s['sample']} (class {s['class']}), label target {s['label_target']}")
        print("  decoded: " + s["decoded"])
        if "position_share" in s:   # the Nearest tokens page's sentence
            print("  " + order_caption(s["token_norm"], s["position_share"], summary["real_token_norm"],
                                       summary["real_position_share"]))
        if "top_attended_positions" in s:
            print("  most attended by the [CLS] labels: " +
                  ", ".join(f"#{p['position']} {p['token']} ({p['mass']:.3f})" for p in s["top_attended_positions"]))
            print(f"  KL(label||model) mean over layers/heads: before {s['kl_before_mean']:.3f}, "
                  f"after the inner step {s['kl_after_mean']:.3f}")
        for i, pos in enumerate(s["nearest"][: min(len(s["nearest"]), 12)]):
            print(f"  pos {i:3d}: " + "  ".join(f"{t} {c:.2f}" for t, c in pos))
        if len(s["nearest"]) > 12:
            print(f"  ... {len(s['nearest']) - 12} more positions (use --json for all)")
    return 0


def _cmd_anatomy(a) -> int:
    from .step_anatomy import record_anatomy, step_anatomy
    from .views.anatomy import anatomy_lines

    _set_threads(a.threads)
    if a.learners < 1:
        raise UserError(f"--learners must be >= 1, got {a.learners}")
    run, cfg, prep, distilled = _load_for_run(a.run, a.checkpoint, a.data_dir, a.device, a.eval_rows)
    split, encoded = prep.split(a.split, cfg.data.is_custom)
    result = step_anatomy(prep.learner, distilled, encoded, prep.task.spec.metrics, learners=a.learners,
                          seed=a.seed, split=split, metric=prep.task.spec.paper_metric, checkpoint=a.checkpoint)
    record_anatomy(run, result)
    if a.json:
        print(json.dumps(result.to_dict()))
        return 0
    print(f"run {run.path}  checkpoint {a.checkpoint} (step {result.step})  "
          f"task {prep.task.spec.name}{'  [demo data]' if prep.task.is_demo else ''}")
    print("\n".join(anatomy_lines(result)))
    return 0


def _print_study_report(out: Path, against: Path | None = None) -> int:
    """`study --report [--against DIR]`: the finished rows as the Markdown table beside the paper (and an
    earlier study), and the CPU time."""
    from .study import cpu_breakdown, load_summary
    from .views.results import markdown_table

    previous = load_summary(against / "summary.json") if against is not None else None
    rows = load_summary(out / "summary.json")
    print(markdown_table(rows, previous))
    cpu = cpu_breakdown(out, rows)
    print(f"\nCPU time: {cpu.hours:.2f} h in all: {cpu.describe()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .study import ReportRequested, cmd_study
    from .sweep import cmd_sweep

    handler = {"distill": lambda a: _cmd_distill(a, argv if argv is not None else sys.argv[1:]),
               "evaluate": _cmd_evaluate, "baseline": _cmd_baseline,
               "inspect": _cmd_inspect, "study": cmd_study, "sweep": cmd_sweep}[args.command]
    try:
        try:
            return handler(args)
        except ReportRequested as report:
            return _print_study_report(report.out, report.against)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        _leave_world()


def _leave_world() -> None:
    # a gloo group left to interpreter teardown can abort a finished rank ("terminate called without an
    # active exception", exit -6), failing a torchrun job whose work is all done
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
