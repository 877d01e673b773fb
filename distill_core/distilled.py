"""DistilledData: synthetic embeddings, labels, attention labels and inner learning rates."""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .errors import UserError
from .presets import BASE
from .losses import ATTENTION_MODES

__all__ = ["DistilledConfig", "DistilledData", "StepBatch", "inverse_softplus", "lr_to_raw", "lr_group_names",
           "lr_group_of", "FORMAT_NAME", "atomic_write_bytes"]

FORMAT_NAME = "distill-attention-labels/distilled-data"
FORMAT_VERSION = 1
LABEL_TYPES = ("hard", "soft", "unrestricted")
INIT_KINDS = ("random", "real", "real-fill")
ATTENTION_INITS = ("random", "model")
FEATURE_LABELS = ("none", "pooled")
LR_GROUPS = ("one", "head", "layer")
_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def lr_group_names(groups: str, num_layers: int) -> list[str]:
    """The parameter groups that get an inner lr of their own: one (the paper: a single lr per step),
    head (the encoder, and the pooler with the classifier), layer (embeddings, each layer, the head)."""
    if groups == "one":
        return ["all"]
    if groups == "head":
        return ["encoder", "head"]
    return ["embeddings", *(f"layer {i}" for i in range(num_layers)), "head"]


def lr_group_of(name: str, groups: str, num_layers: int) -> int:
    """The group of a learner parameter, by its name: '<x>.layer.<i>.' is layer i, '<x>embeddings<y>' the
    embeddings, anything else (pooler, classifier, pre_classifier) the head."""
    if groups == "one":
        return 0
    layer = _LAYER_INDEX.search(name)
    in_encoder = layer is not None or "embeddings" in name
    if groups == "head":
        return 0 if in_encoder else 1
    if layer is not None and int(layer.group(1)) < num_layers:
        return 1 + int(layer.group(1))
    return 0 if "embeddings" in name else num_layers + 1


def inverse_softplus(y: float) -> float:
    """x with softplus(x) == y, exactly: log(expm1(y)) (not log(exp(y) - 1))."""
    if y <= 0:
        raise UserError(f"inner learning rate init must be > 0, got {y}")
    return y + math.log(-math.expm1(-y)) if y > 20 else math.log(math.expm1(y))


def lr_to_raw(lr: float, top: float | None) -> float:
    """The raw parameter whose inner lr is `lr`: inverse softplus, or logit(lr / top) when bounded."""
    if top is None:
        return inverse_softplus(lr)
    return math.log(lr / top) - math.log1p(-lr / top)


@dataclass
class DistilledConfig:
    """Shape and kind of the synthetic data (METHOD.md, 'What one distilled sample holds')."""

    seq_len: int = BASE["distilled"]["seq_len"]
    samples_per_class: int = BASE["distilled"]["samples_per_class"]
    inner_steps: int = BASE["distilled"]["inner_steps"]
    different_data_per_step: bool = BASE["distilled"]["different_data_per_step"]
    label_type: str = BASE["distilled"]["label_type"]  # hard | soft | unrestricted
    attention_labels: str = BASE["distilled"]["attention_labels"]  # none | cls | all
    attention_loss_weight: float = BASE["distilled"]["attention_loss_weight"]  # lambda in L_task + lambda * L_attn
    inner_lr_init: float = BASE["distilled"]["inner_lr_init"]
    # None: softplus(raw), unbounded above (the paper). A number: inner_lr_max * sigmoid(raw), an inner lr
    # that cannot climb past it however long the outer loop pushes (beyond the paper).
    inner_lr_max: float | None = BASE["distilled"]["inner_lr_max"]
    # T > 1: divide inner_lr_init and inner_lr_max by T, so the T steps start with (and are bounded by) the
    # movement of one step. Beyond the paper (which inits every step alike): T steps at one step's lr run
    # past the inner loss's stable step size and the unrolled hypergradient explodes (docs/ablation).
    split_inner_lr: bool = BASE["distilled"]["split_inner_lr"]
    # one: a single learned inner lr per step (the paper). head / layer: one per step and parameter group
    # (the encoder and the head; or embeddings, each layer and the head), as MAML++'s per-layer per-step
    # learning rates (beyond the paper): the fresh head and the pre-trained encoder need steps of very
    # different sizes, which one lr cannot give both.
    inner_lr_groups: str = BASE["distilled"]["inner_lr_groups"]
    # random (as the paper) | real (the word embeddings of one real example, padded to L) | real-fill (of real
    # examples of the class laid end to end until the L positions are full, so no position starts as padding)
    init: str = BASE["distilled"]["init"]
    attention_init: str = BASE["distilled"]["attention_init"]  # random N(0,1) (as the paper) | model (the pre-trained model's own attention)
    # none (the paper) | pooled: each sample also holds a learned target for what the head reads (the pooled
    # output), and the inner loss adds feature_loss_weight * its squared distance (beyond the paper). The task
    # loss moves the encoder in a direction set by each learner's random head, the attention labels move where
    # [CLS] looks; a pooled-output target moves what it reads, the same for every head.
    feature_labels: str = BASE["distilled"]["feature_labels"]
    feature_loss_weight: float = BASE["distilled"]["feature_loss_weight"]
    # beyond the paper: > 0 caps the norm at which each synthetic token vector enters the model (the raw
    # parameter is left free, so the cap is a reparametrisation, not a projection). Unbounded, the vectors
    # grow from a word embedding's norm (~1) to ~50 over a long run while the position embeddings they are
    # added to stay at ~0.45, so the LayerNorm after the sum erases word order: with position 0 kept, a
    # permutation of the other 63 leaves the data's validation score unchanged (84.1 against 84.1)
    embed_max_norm: float = BASE["distilled"]["embed_max_norm"]

    def __post_init__(self) -> None:
        if self.inner_lr_max in (0, 0.0):   # the CLI's and the form's way of saying "unbounded"
            self.inner_lr_max = None

    @property
    def step_lr_init(self) -> float:
        """Each inner step's initial learning rate."""
        return self.inner_lr_init / self.inner_steps if self.split_inner_lr else self.inner_lr_init

    @property
    def step_lr_max(self) -> float | None:
        """Each inner step's bound (None: unbounded softplus)."""
        if self.inner_lr_max is None:
            return None
        return self.inner_lr_max / self.inner_steps if self.split_inner_lr else self.inner_lr_max

    def validate(self, max_positions: int | None = None) -> None:
        if self.seq_len < 2:
            raise UserError(f"seq_len must be >= 2, got {self.seq_len}")
        if max_positions is not None and self.seq_len > max_positions:
            raise UserError(f"seq_len {self.seq_len} is above the model's {max_positions} max positions")
        if self.samples_per_class < 1:
            raise UserError(f"samples_per_class must be >= 1, got {self.samples_per_class}")
        if self.inner_steps < 1:
            raise UserError(f"inner_steps must be >= 1, got {self.inner_steps}")
        if self.different_data_per_step and self.samples_per_class % self.inner_steps:
            raise UserError(
                f"different data per step needs samples_per_class ({self.samples_per_class}) to be a multiple of "
                f"inner_steps ({self.inner_steps}): step t uses its own share of the samples")
        if self.label_type not in LABEL_TYPES:
            raise UserError(f"label_type must be one of {', '.join(LABEL_TYPES)}, got {self.label_type!r}")
        if self.attention_labels not in ATTENTION_MODES:
            raise UserError(f"attention_labels must be one of {', '.join(ATTENTION_MODES)}, got {self.attention_labels!r}")
        if self.inner_lr_groups not in LR_GROUPS:
            raise UserError(f"inner_lr_groups must be one of {', '.join(LR_GROUPS)}, got {self.inner_lr_groups!r}")
        if self.init not in INIT_KINDS:
            raise UserError(f"init must be one of {', '.join(INIT_KINDS)}, got {self.init!r}")
        if self.attention_init not in ATTENTION_INITS:
            raise UserError(f"attention_init must be one of {', '.join(ATTENTION_INITS)}, got {self.attention_init!r}")
        if not self.inner_lr_init > 0:
            raise UserError(f"inner_lr_init must be > 0, got {self.inner_lr_init}")
        if self.inner_lr_max is not None and not (isinstance(self.inner_lr_max, (int, float))
                                                  and self.inner_lr_init < self.inner_lr_max <= 100):
            raise UserError(f"inner_lr_max must be above inner_lr_init ({self.inner_lr_init}) and at most 100, "
                            f"got {self.inner_lr_max!r}")
        if self.attention_loss_weight < 0:
            raise UserError(f"attention_loss_weight must be >= 0, got {self.attention_loss_weight}")
        if self.feature_labels not in FEATURE_LABELS:
            raise UserError(f"feature_labels must be one of {', '.join(FEATURE_LABELS)}, got {self.feature_labels!r}")
        if self.feature_loss_weight < 0:
            raise UserError(f"feature_loss_weight must be >= 0, got {self.feature_loss_weight}")
        if not (isinstance(self.embed_max_norm, (int, float)) and self.embed_max_norm >= 0):
            raise UserError(f"embed_max_norm must be >= 0 (0: no cap, the paper), got {self.embed_max_norm!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "DistilledConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class StepBatch:
    """The synthetic mini-batch of one inner step, as differentiable views of the parameters."""

    embeds: torch.Tensor                    # (B, L, D)
    targets: torch.Tensor                   # (B, C) float targets or (B,) class ids
    attention_logits: torch.Tensor | None   # (B, K, H, L) or (B, K, H, L, L)
    feature_targets: torch.Tensor | None = None   # (B, D) targets of the pooled output (feature_labels "pooled")


class DistilledData:
    """The learnable synthetic set. Row r holds sample r // C of class r % C.

    Learnable tensors (all leaf tensors, optimised by the distiller):
      embeds            (N, L, D)  inputs_embeds of each sample
      label_values      (N, C)     one-hot at init; soft -> softmax, unrestricted -> raw
      attention_logits  (N, K, H, L) ("cls") or (N, K, H, L, L) ("all"); softmax = target attention
      feature_targets   (N, D) with feature_labels "pooled": the target of each sample's pooled output
      lr_raw            (T,)       softplus(lr_raw[t]) (or inner_lr_max * sigmoid) is step t's inner lr;
                        (T, G) with G parameter groups (inner_lr_groups head or layer): [t, g] is group g's
    """

    def __init__(self, config: DistilledConfig, num_labels: int, hidden_size: int, num_layers: int,
                 num_heads: int, label_names: list[str] | None = None, meta: dict | None = None,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None):
        config.validate()
        self.config = config
        self.num_labels = num_labels
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.label_names = list(label_names) if label_names else [str(i) for i in range(num_labels)]
        self.meta = dict(meta or {})
        n, L = self.num_samples, config.seq_len

        def randn(*shape):  # generated on CPU so a seed gives the same data on every device
            return torch.randn(*shape, generator=generator, dtype=torch.float32).to(device=device, dtype=dtype)

        self.embeds = randn(n, L, hidden_size)
        self.label_values = F.one_hot(self.row_classes(), num_labels).to(device=device, dtype=dtype)
        if config.attention_labels == "cls":
            self.attention_logits = randn(n, num_layers, num_heads, L)
        elif config.attention_labels == "all":
            self.attention_logits = randn(n, num_layers, num_heads, L, L)
        else:
            self.attention_logits = None
        # zeros until the distiller sets them to the model's own pooled output (a loss of zero at the start)
        self.feature_targets = (torch.zeros(n, hidden_size, device=device, dtype=dtype)
                                if config.feature_labels == "pooled" else None)
        self.lr_raw = torch.full(lr_shape(config, num_layers), lr_to_raw(config.step_lr_init, config.step_lr_max),
                                 device=device, dtype=dtype)
        for t in self.learnable().values():
            t.requires_grad_(True)

    # --- layout ---------------------------------------------------------------------------
    @property
    def num_samples(self) -> int:
        return self.config.samples_per_class * self.num_labels

    def row_classes(self) -> torch.Tensor:
        return torch.arange(self.num_samples) % self.num_labels

    def step_rows(self, t: int) -> list[int]:
        """Rows used at inner step t: all of them (same data), or the t-th share of each class."""
        c = self.config
        if not c.different_data_per_step:
            return list(range(self.num_samples))
        per_step = c.samples_per_class // c.inner_steps
        return list(range(t * per_step * self.num_labels, (t + 1) * per_step * self.num_labels))

    # --- views -----------------------------------------------------------------------------
    def learnable(self) -> dict[str, torch.Tensor]:
        """The tensors the outer loop optimises (hard labels stay fixed)."""
        out = {"embeds": self.embeds}
        if self.config.label_type != "hard":
            out["labels"] = self.label_values
        if self.attention_logits is not None:
            out["attention"] = self.attention_logits
        if self.feature_targets is not None:
            out["features"] = self.feature_targets
        out["lr"] = self.lr_raw
        return out

    def label_targets(self) -> torch.Tensor:
        """(N, C) target distribution (or raw values) used in the inner cross-entropy."""
        if self.config.label_type == "soft":
            return F.softmax(self.label_values, dim=-1)
        return self.label_values  # hard: fixed one-hot; unrestricted: raw values

    def inner_lrs(self) -> torch.Tensor:
        """(T,) one lr per inner step, or (T, G) one per step and parameter group."""
        return self.lr_from_raw(self.lr_raw)

    @property
    def lr_groups(self) -> list[str]:
        """The names of the inner lr's parameter groups (['all'] for one lr per step)."""
        return lr_group_names(self.config.inner_lr_groups, self.num_layers)

    def lr_group_index(self, keys) -> dict[str, int] | None:
        """Each learner parameter's column of lr_raw; None when there is one lr per step."""
        if self.config.inner_lr_groups == "one":
            return None
        return {k: lr_group_of(k, self.config.inner_lr_groups, self.num_layers) for k in keys}

    def lr_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """The inner learning rate(s) a raw parameter stands for (softplus, or bounded by inner_lr_max)."""
        top = self.config.step_lr_max
        return F.softplus(raw) if top is None else top * torch.sigmoid(raw)

    def step_batch(self, t: int, detach: bool = False) -> StepBatch:
        rows = self.step_rows(t)
        idx = torch.as_tensor(rows, device=self.embeds.device)
        targets = self.label_targets()

        def rows_of(x: torch.Tensor | None) -> torch.Tensor | None:
            if x is None:
                return None
            x = x.index_select(0, idx)
            return x.detach() if detach else x

        return StepBatch(self.model_embeds(rows_of(self.embeds)), rows_of(targets), rows_of(self.attention_logits),
                         rows_of(self.feature_targets))

    def model_embeds(self, embeds: torch.Tensor | None = None) -> torch.Tensor:
        """What the model is fed for `embeds` (default: all rows): each token vector at its own norm, or at
        most embed_max_norm where that cap is set (differentiable, so the hypergradient passes through it)."""
        x = self.embeds if embeds is None else embeds
        cap = self.config.embed_max_norm
        if not cap:
            return x
        norms = x.norm(dim=-1, keepdim=True)
        # where, not cap / max(norm, cap) alone: a scalar over a tensor is a multiply by the reciprocal,
        # which is not exactly 1 at norm == cap, and a token under the cap must enter exactly as it is
        return x * torch.where(norms > cap, cap / norms.clamp_min(cap), torch.ones_like(norms))

    def attention_distributions(self) -> torch.Tensor | None:
        """softmax of the attention labels: (N, K, H, L) or (N, K, H, L, L)."""
        return None if self.attention_logits is None else F.softmax(self.attention_logits.detach(), dim=-1)

    # --- init from real data ---------------------------------------------------------------
    @torch.no_grad()
    def init_from_token_ids(self, token_ids: list[list[int]], word_embeddings: torch.Tensor, pad_id: int) -> None:
        """Set each row's embeddings to the word embeddings of a real example (padded/cut to L)."""
        if len(token_ids) != self.num_samples:
            raise ValueError(f"need {self.num_samples} examples, got {len(token_ids)}")
        L = self.config.seq_len
        for r, ids in enumerate(token_ids):
            ids = list(ids[:L]) + [pad_id] * max(0, L - len(ids))
            self.embeds[r].copy_(word_embeddings[torch.as_tensor(ids, device=word_embeddings.device)])

    @torch.no_grad()
    def init_attention_from(self, attention: torch.Tensor) -> None:
        """Set the attention labels to log(attention): softmax of the labels then equals `attention`.

        attention: (N, K, H, L, L) probabilities (e.g. the pre-trained model on each sample).
        """
        if self.attention_logits is None:
            return
        probs = attention[..., 0, :] if self.config.attention_labels == "cls" else attention
        self.attention_logits.copy_(probs.clamp_min(1e-8).log().to(self.attention_logits.dtype))

    @torch.no_grad()
    def init_features_from(self, pooled: torch.Tensor) -> None:
        """Set the feature targets to `pooled` (N, D), e.g. the pre-trained model's own pooled output on each
        sample: the feature loss then starts at zero, so the run starts as one without feature labels."""
        if self.feature_targets is not None:
            self.feature_targets.copy_(pooled.to(self.feature_targets.dtype))

    # --- persistence -------------------------------------------------------------------------
    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"embeds": self.embeds, "label_values": self.label_values, "lr_raw": self.lr_raw}
        if self.attention_logits is not None:
            out["attention_logits"] = self.attention_logits
        if self.feature_targets is not None:
            out["feature_targets"] = self.feature_targets
        return {k: v.detach().to("cpu").contiguous() for k, v in out.items()}

    def metadata(self) -> dict[str, str]:
        header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "config": asdict(self.config),
                  "num_labels": self.num_labels, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                  "num_heads": self.num_heads, "label_names": self.label_names, "meta": self.meta}
        return {"distilled": json.dumps(header)}

    def save(self, path: str | os.PathLike) -> Path:
        """Write safetensors (tensors + JSON header) atomically: no pickle, no half-written file."""
        from safetensors.torch import save

        data = save(self.tensors(), metadata=self.metadata())
        return atomic_write_bytes(Path(path), data)

    @classmethod
    def load(cls, path: str | os.PathLike, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
             expect: dict[str, Any] | None = None) -> "DistilledData":
        """Load a file written by `save`; `expect` (a Learner.fingerprint()) rejects other models."""
        from safetensors import safe_open

        p = Path(path)
        if not p.exists():
            raise UserError(f"distilled-data file not found: {p}")
        if not p.is_file():
            raise UserError(f"{p} is not a file")
        try:
            with safe_open(str(p), framework="pt", device="cpu") as f:
                raw_meta = f.metadata() or {}
                shapes = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}
                try:
                    header = json.loads(raw_meta["distilled"])
                    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
                        raise KeyError("format")
                except (KeyError, ValueError, TypeError):
                    raise UserError(f"{p} is a safetensors file but not distilled data from this tool") from None
                # Everything the header claims is checked against bounds and against the file's own
                # tensor shapes before anything is allocated: a 1 KB file cannot ask for 30 GB.
                dims = check_header(header, shapes, str(p))
                if expect is not None:
                    check_fingerprint(header, expect, str(p))
                tensors = {k: f.get_tensor(k) for k in dims}
        except UserError:
            raise
        except Exception as exc:
            raise UserError(f"{p} is not a readable safetensors file ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else 'corrupt'})") from None
        config = DistilledConfig.from_dict(header["config"])
        obj = cls(config, int(header["num_labels"]), int(header["hidden_size"]), int(header["num_layers"]),
                  int(header["num_heads"]), header.get("label_names"), header.get("meta"), device=device, dtype=dtype)
        with torch.no_grad():
            obj.embeds.copy_(tensors["embeds"])
            obj.label_values.copy_(tensors["label_values"])
            obj.lr_raw.copy_(tensors["lr_raw"])
            if obj.attention_logits is not None:
                obj.attention_logits.copy_(tensors["attention_logits"])
            if obj.feature_targets is not None:
                obj.feature_targets.copy_(tensors["feature_targets"])
        for name, t in obj.learnable().items():
            if not torch.isfinite(t).all():
                raise UserError(f"{p}: tensor {name!r} holds NaN or inf")
        return obj

    def clone(self) -> "DistilledData":
        other = DistilledData.__new__(DistilledData)
        other.__dict__.update(self.__dict__)
        other.meta = dict(self.meta)
        other.embeds = self.embeds.detach().clone().requires_grad_(True)
        other.label_values = self.label_values.detach().clone().requires_grad_(self.config.label_type != "hard")
        other.attention_logits = None if self.attention_logits is None else \
            self.attention_logits.detach().clone().requires_grad_(True)
        other.feature_targets = None if self.feature_targets is None else \
            self.feature_targets.detach().clone().requires_grad_(True)
        other.lr_raw = self.lr_raw.detach().clone().requires_grad_(True)
        return other


# Bounds on what a distilled-data header may claim (far above any real use; they cap allocations).
HEADER_LIMITS = {"num_labels": 10_000, "hidden_size": 16_384, "num_layers": 256, "num_heads": 256,
                 "seq_len": 16_384, "samples_per_class": 100_000, "inner_steps": 10_000}
MAX_ELEMENTS = 2 ** 31          # per tensor: 8 GB of float32
_FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}


def lr_shape(config: "DistilledConfig", num_layers: int) -> tuple[int, ...]:
    """(T,) for one inner lr per step; (T, G) for one per step and parameter group."""
    if config.inner_lr_groups == "one":
        return (config.inner_steps,)
    return (config.inner_steps, len(lr_group_names(config.inner_lr_groups, num_layers)))


def expected_shapes(config: "DistilledConfig", num_labels: int, hidden: int, layers: int, heads: int) -> dict:
    """The tensor shapes a header describes, computed without allocating them."""
    n, L = config.samples_per_class * num_labels, config.seq_len
    out = {"embeds": (n, L, hidden), "label_values": (n, num_labels), "lr_raw": lr_shape(config, layers)}
    if config.attention_labels == "cls":
        out["attention_logits"] = (n, layers, heads, L)
    elif config.attention_labels == "all":
        out["attention_logits"] = (n, layers, heads, L, L)
    if config.feature_labels == "pooled":
        out["feature_targets"] = (n, hidden)
    return out


def check_header(header: dict, shapes: dict[str, tuple[tuple[int, ...], str]], where: str) -> dict:
    """Validate a header against HEADER_LIMITS and the file's own tensors; returns the expected shapes."""
    if int(header.get("version", 0) or 0) > FORMAT_VERSION:
        raise UserError(f"{where} was written by a newer version (format {header['version']})")
    cfg = header.get("config")
    if not isinstance(cfg, dict):
        raise UserError(f"{where}: the header has no config")
    values = {}
    for key in ("num_labels", "hidden_size", "num_layers", "num_heads"):
        values[key] = header.get(key)
    for key in ("seq_len", "samples_per_class", "inner_steps"):
        values[key] = cfg.get(key)
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= HEADER_LIMITS[key]:
            raise UserError(f"{where}: header field {key}={v!r} is not an integer in [1, {HEADER_LIMITS[key]}]")
    names = header.get("label_names")
    if names is not None and (not isinstance(names, list) or len(names) != values["num_labels"]
                              or not all(isinstance(x, str) and len(x) <= 200 for x in names)):
        raise UserError(f"{where}: header label_names must be {values['num_labels']} short strings")
    if header.get("meta") is not None and not isinstance(header["meta"], dict):
        raise UserError(f"{where}: header meta must be an object")
    try:
        config = DistilledConfig.from_dict(cfg)
        config.validate()
    except (TypeError, ValueError, UserError) as exc:
        raise UserError(f"{where}: the header's config is invalid ({exc})") from None
    want = expected_shapes(config, values["num_labels"], values["hidden_size"], values["num_layers"],
                           values["num_heads"])
    for name, shape in want.items():
        if math.prod(shape) > MAX_ELEMENTS:
            raise UserError(f"{where}: the header asks for a {name} tensor of {math.prod(shape):,} elements "
                            f"(limit {MAX_ELEMENTS:,})")
        if name not in shapes:
            raise UserError(f"{where}: tensor {name!r} is missing")
        got, dtype = shapes[name]
        if got != shape:
            raise UserError(f"{where}: tensor {name!r} has shape {list(got)} but its own header says {list(shape)}")
        if dtype not in _FLOAT_DTYPES:
            raise UserError(f"{where}: tensor {name!r} has dtype {dtype}; a floating-point tensor is needed")
    return want


def check_fingerprint(header: dict, expect: dict, where: str) -> None:
    """Refuse a file made for another model: shapes first, then the model's identity where both record it."""
    for key in ("hidden_size", "num_layers", "num_heads", "num_labels"):
        if key in expect and int(header[key]) != int(expect[key]):
            raise UserError(f"{where} was made for another model or task: {key} is {header[key]} "
                            f"in the file but {expect[key]} for {expect.get('model', 'this model')}")
    pooled = (header.get("meta") or {}).get("pooling", "cls")   # files from before the option: the pooler
    if "pooling" in expect and pooled != expect["pooling"]:
        raise UserError(f"{where} was distilled for a classifier with pooling {pooled!r}, but this model uses "
                        f"{expect['pooling']!r}: set pooling to {pooled!r}")
    made_for = (header.get("meta") or {}).get("model_identity")
    if made_for and expect.get("model_identity") and made_for != expect["model_identity"]:
        theirs = (header.get("meta") or {}).get("model", "another model")
        raise UserError(f"{where} was made for {theirs} (identity {made_for}), not for {expect.get('model')} "
                        f"(identity {expect['model_identity']}): same shapes, different weights or vocabulary")


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)        # the rename itself survives a power cut
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:            # e.g. Windows: directories cannot be opened; NTFS journals renames
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
