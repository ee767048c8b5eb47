"""Introduced in notebooks/05_fine_tune.ipynb.

Offline checks of a chat fine-tuning file before you upload it to a cloud service (OpenAI or Azure
OpenAI chat fine-tuning). The file is OpenAI's chat JSONL format, one example per line:

    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "...", "weight": 1}]}

- `validate_file(path)` / `validate_lines(lines)` return a `ValidationReport`: every problem as an
  `Issue` (1-based line number, a stable code, a message), never an exception for a bad line.
  Errors are what the service would reject (`ok` is False if there is any); warnings are worth a
  look (blank lines, extra message keys, fewer than 10 examples).
- Tokens per example are the content tokens of its messages plus `MESSAGE_OVERHEAD_TOKENS` per
  message and `REPLY_PRIMING_TOKENS` once (the constants of `labkit.costs`). The default counter is
  the embedded local model's tokenizer, loaded with llama-cpp-python in vocab-only mode (no server,
  no weights). Its chat template is ChatML, whose wrapper `<|im_start|>role\\n ... <|im_end|>\\n` is
  exactly those 5 tokens per message, so the template is not rendered (it would also insert a
  default system prompt into examples that have none, which a cloud fine-tune never sees). For a
  cloud model the counts are estimates (another tokenizer): `tokens_estimated` says so.
- `estimate_training_cost(tokens_total, model, epochs)` prices tokens_total x epochs with a
  `training_per_1k` field of the model's entry in `data/prices.json`. The table holds inference
  prices; without that field the cost is `usd=None` with a note saying how to add it (no invented
  prices). Local models cost 0.

Usage: `python -m labkit.finetune.validate FILE [--max-tokens N] [--model NAME] [--epochs N]`.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from labkit.costs import LOCAL_NOTE, MESSAGE_OVERHEAD_TOKENS, REPLY_PRIMING_TOKENS, base_model, load_prices

ROLES = ("system", "user", "assistant")
MESSAGE_KEYS = frozenset({"role", "content", "name", "weight"})
MIN_EXAMPLES = 10  # OpenAI refuses a training file with fewer examples
DEFAULT_MAX_TOKENS = 4096
SUMMARY_ISSUES = 5  # issues of each kind listed by summary()

# every code an Issue can have (errors and warnings)
ERROR_CODES = (
    "empty_file", "not_utf8", "invalid_json", "not_an_object", "missing_messages", "messages_not_a_list",
    "empty_messages", "bad_message", "unknown_role", "role_order", "no_assistant", "empty_content",
    "bad_weight", "too_long", "duplicate",
)
WARNING_CODES = ("blank_line", "utf8_bom", "extra_keys", "weight_not_on_assistant", "nothing_to_train",
                 "too_few_examples")

TokenCounter = Callable[[str], int]


# ---------------------------------------------------------------------------------------------
# results
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Issue:
    """One problem: `line` is 1-based (None for the whole file), `code` one of ERROR/WARNING_CODES."""

    line: int | None
    code: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return f"{where}: {self.code}: {self.message}"


@dataclass(frozen=True)
class TrainingCost:
    """Estimated training cost: `usd` is None when the price table has no training price."""

    usd: float | None
    model: str | None
    base_model: str | None
    tokens: int
    epochs: int
    billed_tokens: int
    note: str
    prices_version: Any = None

    @property
    def priced(self) -> bool:
        return self.usd is not None


@dataclass
class ValidationReport:
    """What `validate_file`/`validate_lines` found. Token stats cover the valid examples only."""

    path: str | None
    n_lines: int = 0
    n_examples: int = 0
    errors: list[Issue] = field(default_factory=list)
    warnings: list[Issue] = field(default_factory=list)
    tokens_total: int = 0
    tokens_min: int = 0
    tokens_mean: float = 0.0
    tokens_max: int = 0
    assistant_tokens_total: int = 0  # content tokens of assistant messages that are trained on
    tokens_estimated: bool = True
    tokenizer: str = ""
    max_tokens_per_example: int = DEFAULT_MAX_TOKENS
    cost: TrainingCost | None = None

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def error_counts(self) -> dict[str, int]:
        return dict(Counter(issue.code for issue in self.errors))

    def warning_counts(self) -> dict[str, int]:
        return dict(Counter(issue.code for issue in self.warnings))

    def summary(self) -> str:
        """A short human-readable report: counts per code, the first issues, tokens and cost."""
        name = Path(self.path).name if self.path else "<lines>"
        verdict = "OK" if self.ok else "NOT OK"
        out = [f"{name}: {verdict}: {self.n_lines} lines, {self.n_examples} valid examples, "
               f"{len(self.errors)} errors, {len(self.warnings)} warnings"]
        for label, issues, counts in (("errors", self.errors, self.error_counts()),
                                      ("warnings", self.warnings, self.warning_counts())):
            if not issues:
                continue
            out.append(f"{label}: " + ", ".join(f"{code} x{n}" for code, n in sorted(counts.items())))
            out.extend(f"  {issue}" for issue in issues[:SUMMARY_ISSUES])
            if len(issues) > SUMMARY_ISSUES:
                out.append(f"  ... and {len(issues) - SUMMARY_ISSUES} more {label}")
        estimate = "estimated" if self.tokens_estimated else "counted"
        out.append(f"tokens ({estimate} with {self.tokenizer}): total {self.tokens_total:,}; per example "
                   f"min {self.tokens_min:,} / mean {self.tokens_mean:,.1f} / max {self.tokens_max:,} "
                   f"(limit {self.max_tokens_per_example:,}); assistant {self.assistant_tokens_total:,}")
        if self.cost is not None:
            c = self.cost
            usd = f"${c.usd:,.4f}" if c.usd is not None else "unknown"
            out.append(f"training cost ({c.epochs} epochs, {c.billed_tokens:,} tokens billed): {usd} - "
                       f"{c.note}")
        return "\n".join(out)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        data["error_counts"] = self.error_counts()
        data["warning_counts"] = self.warning_counts()
        if self.cost is not None:
            data["cost"]["priced"] = self.cost.priced
        return data


# ---------------------------------------------------------------------------------------------
# tokens
# ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def _local_vocab() -> Any:
    """The embedded model's tokenizer only (vocab-only GGUF load: fast, no weights, no server)."""
    import llama_cpp

    from labkit.services.manager import default_model_path

    path = default_model_path()
    # vocab-only still creates a tiny context, which logs a harmless n_ctx warning on stderr
    with contextlib.redirect_stderr(io.StringIO()):
        llama = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return llama, path.name


def _rough_count(text: str) -> int:
    return max(1, round(len(text) / 4)) if text else 0


def default_token_counter() -> tuple[TokenCounter, str, bool]:
    """(counter, its name, exact-for-the-local-model). Falls back to ~4 characters per token."""
    try:
        llama, name = _local_vocab()
    except Exception:  # no llama-cpp-python or no model package: a labelled rough estimate
        return _rough_count, "about 4 characters per token (local tokenizer unavailable)", False

    def count(text: str) -> int:
        if not text:
            return 0
        # errors="replace": a lone surrogate (valid in JSON as \ud800) must not raise
        return len(llama.tokenize(text.encode("utf-8", errors="replace"), add_bos=False, special=True))

    return count, f"{name} (llama.cpp vocab-only)", True


def _is_local(model: str, prices: Mapping[str, Any]) -> bool:
    base = base_model(model, prices)
    if base is not None:
        return bool(prices["models"][base].get("local"))
    try:
        from labkit.config import get_settings
        from labkit.services import registered_models

        settings = get_settings()
        names = {settings.labkit_local_chat_model, settings.labkit_local_embed_model}
        return model in names or model in registered_models(settings)
    except Exception:  # settings or the local registry unavailable: treat as not local
        return False


def estimate_training_cost(tokens_total: int, model: str | None, epochs: int = 3,
                           *, prices: Mapping[str, Any] | None = None) -> TrainingCost:
    """Training cost of `tokens_total` tokens trained `epochs` times (billed tokens = product).

    Uses a `training_per_1k` (USD per 1,000 trained tokens) field of the model's price entry; the
    table holds inference prices, so without that field `usd` is None and the note says how to add it.
    """
    if tokens_total < 0:
        raise ValueError("tokens_total must be >= 0")
    if epochs < 1:
        raise ValueError("epochs must be >= 1")
    billed = tokens_total * epochs
    if not model:
        return TrainingCost(None, None, None, tokens_total, epochs, billed,
                            "no model given: pass a model name to estimate the training cost")
    prices = prices or load_prices()
    version = prices.get("version")
    if _is_local(model, prices):
        return TrainingCost(0.0, model, base_model(model, prices) or model, tokens_total, epochs, billed,
                            LOCAL_NOTE, version)
    base = base_model(model, prices)
    if base is None:
        note = f"no price for {model!r}: add it (or its deployment) to data/prices.json"
        return TrainingCost(None, model, None, tokens_total, epochs, billed, note, version)
    entry = prices["models"][base]
    rate = entry.get("training_per_1k")
    if rate is None:
        note = (f"data/prices.json has no training price for {base!r} (it lists inference prices only): "
                f"add \"training_per_1k\" (USD per 1,000 trained tokens) to that entry from the provider's "
                f"pricing page and update its \"read\" date")
        return TrainingCost(None, model, base, tokens_total, epochs, billed, note, version)
    via = "" if base == model else f" (priced as {base})"
    return TrainingCost(billed / 1000 * float(rate), model, base, tokens_total, epochs, billed,
                        f"training list price read {entry['read']}{via}", version)


# ---------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------
class _Line:
    """The issues of one line, at most one per code (details of repeats are joined)."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.errors: dict[str, list[str]] = {}
        self.warnings: dict[str, list[str]] = {}

    def error(self, code: str, detail: str) -> None:
        self.errors.setdefault(code, []).append(detail)

    def warn(self, code: str, detail: str) -> None:
        self.warnings.setdefault(code, []).append(detail)

    @staticmethod
    def _issues(number: int, found: dict[str, list[str]]) -> list[Issue]:
        issues = []
        for code, details in found.items():
            text = "; ".join(details[:3]) + (f" (and {len(details) - 3} more)" if len(details) > 3 else "")
            issues.append(Issue(number, code, text))
        return issues

    def issues(self) -> tuple[list[Issue], list[Issue]]:
        return self._issues(self.number, self.errors), self._issues(self.number, self.warnings)


def _check_messages(messages: Sequence[Any], found: _Line) -> None:
    """Per-message checks (shape, role, keys, content, weight)."""
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            found.error("bad_message", f"message {i} is not a JSON object")
            continue
        missing = [key for key in ("role", "content") if key not in message]
        if missing:
            found.error("bad_message", f"message {i} has no {' or '.join(repr(k) for k in missing)}")
            continue
        role, content = message["role"], message["content"]
        if not isinstance(role, str):
            found.error("bad_message", f"message {i}: 'role' must be a string")
            continue
        if role not in ROLES:
            found.error("unknown_role", f"message {i} has role {role!r} (expected one of {', '.join(ROLES)})")
        if not isinstance(content, str):
            found.error("bad_message", f"message {i} ({role}): 'content' must be a string, "
                                       f"not {type(content).__name__}")
        elif not content.strip():
            found.error("empty_content", f"message {i} ({role}) has empty content")
        extra = sorted(set(message) - MESSAGE_KEYS)
        if extra:
            found.warn("extra_keys", f"message {i} has keys {', '.join(extra)} (the service may refuse "
                                     f"them; expected only {', '.join(sorted(MESSAGE_KEYS))})")
        if "weight" in message:
            weight = message["weight"]
            if type(weight) is not int or weight not in (0, 1):
                found.error("bad_weight", f"message {i} has weight {weight!r} (must be 0 or 1)")
            elif role != "assistant":
                found.warn("weight_not_on_assistant", f"message {i} ({role}) has a weight: only "
                                                      "assistant messages are weighted")


def _check_roles(roles: list[str], found: _Line) -> None:
    """System first and at most once, then user/assistant alternating from user, ending on assistant."""
    if "assistant" not in roles:
        found.error("no_assistant", "no assistant message: nothing to learn from")
        return
    start = 1 if roles[0] == "system" else 0
    for i, role in enumerate(roles[start:], start=start):
        expected = "user" if (i - start) % 2 == 0 else "assistant"
        if role == "system":
            found.error("role_order", f"message {i + 1} is a system message: only the first message may be")
            return
        if role != expected:
            found.error("role_order", f"message {i + 1} is {role}, expected {expected} (after an optional "
                                      "system message, user and assistant alternate, starting with user)")
            return
    if roles[-1] != "assistant":
        found.error("role_order", "the last message must be an assistant message")


def _decode(raw: str | bytes, number: int, found: _Line) -> str | None:
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            found.error("not_utf8", f"not valid UTF-8 (byte {exc.start + 1}): save the file as UTF-8")
            return None
    if number == 1 and text.startswith("\ufeff"):
        found.warn("utf8_bom", "the file starts with a UTF-8 byte order mark; save it without one")
        text = text[1:]
    return text.rstrip("\r\n")


def validate_lines(lines: Iterable[str | bytes], *, path: str | Path | None = None,
                   max_tokens_per_example: int = DEFAULT_MAX_TOKENS,
                   count_tokens: TokenCounter | None = None, model: str | None = None,
                   epochs: int = 3) -> ValidationReport:
    """Check already-read lines (str, or bytes to be decoded as UTF-8) of a chat fine-tuning file.

    `count_tokens(text) -> int` replaces the local model's tokenizer (named in `tokenizer`). `model`
    is the model to fine-tune: a cloud model marks the counts as estimates and prices the training.
    """
    if max_tokens_per_example < 1:
        raise ValueError("max_tokens_per_example must be >= 1")
    if count_tokens is None:
        counter, tokenizer, exact = default_token_counter()
    else:
        counter = count_tokens
        tokenizer = f"{getattr(count_tokens, '__qualname__', None) or repr(count_tokens)} (given)"
        exact = False
    prices = load_prices()
    if model and not _is_local(model, prices):
        exact = False  # another tokenizer than the cloud model's

    report = ValidationReport(path=str(path) if path is not None else None, tokenizer=tokenizer,
                              tokens_estimated=not exact, max_tokens_per_example=max_tokens_per_example)
    seen: dict[str, int] = {}  # canonical messages -> first line with them
    per_example: list[int] = []
    non_blank = 0
    for number, raw in enumerate(lines, start=1):
        report.n_lines = number
        found = _Line(number)
        tokens = _check_line(raw, number, found, counter, max_tokens_per_example, seen)
        if tokens is not None:
            per_example.append(tokens[0])
            report.assistant_tokens_total += tokens[1]
        if "blank_line" not in found.warnings:
            non_blank += 1
        errors, warnings = found.issues()
        report.errors.extend(errors)
        report.warnings.extend(warnings)

    if report.n_lines == 0 or non_blank == 0:
        what = "no lines at all" if report.n_lines == 0 else "only blank lines"
        report.errors.insert(0, Issue(None, "empty_file", f"no training examples ({what})"))
    elif len(per_example) < MIN_EXAMPLES:
        report.warnings.append(Issue(None, "too_few_examples", f"{len(per_example)} valid examples: OpenAI "
                                     f"fine-tuning needs at least {MIN_EXAMPLES} (50-100 is a better start)"))
    report.n_examples = len(per_example)
    if per_example:
        report.tokens_total = sum(per_example)
        report.tokens_min, report.tokens_max = min(per_example), max(per_example)
        report.tokens_mean = statistics.fmean(per_example)
    report.cost = estimate_training_cost(report.tokens_total, model, epochs, prices=prices)
    return report


def _check_line(raw: str | bytes, number: int, found: _Line, counter: TokenCounter, max_tokens: int,
                seen: dict[str, int]) -> tuple[int, int] | None:
    """All checks of one line; (tokens, trained assistant tokens) when it is a valid example."""
    text = _decode(raw, number, found)
    if text is None:
        return None
    if not text.strip():
        found.warn("blank_line", "blank line (skipped; remove it)")
        return None
    try:
        example = json.loads(text)
    except json.JSONDecodeError as exc:
        found.error("invalid_json", f"not valid JSON: {exc.msg} at column {exc.colno}")
        return None
    except RecursionError:
        found.error("invalid_json", "JSON nested too deeply to read")
        return None
    if not isinstance(example, dict):
        found.error("not_an_object", f"each line must be a JSON object, not {type(example).__name__}")
        return None
    if "messages" not in example:
        found.error("missing_messages", "no 'messages' key")
        return None
    messages = example["messages"]
    if not isinstance(messages, list):
        found.error("messages_not_a_list", f"'messages' must be a list, not {type(messages).__name__}")
        return None
    if not messages:
        found.error("empty_messages", "'messages' is empty")
        return None

    _check_messages(messages, found)
    if "bad_message" in found.errors or "unknown_role" in found.errors:
        return None  # role order and tokens need well-formed messages
    _check_roles([m["role"] for m in messages], found)
    weights = [m.get("weight", 1) for m in messages if m["role"] == "assistant"]
    if weights and not any(weights) and "bad_weight" not in found.errors:
        found.warn("nothing_to_train", "every assistant message has weight 0: nothing is trained on")
    if found.errors:
        return None

    content_tokens = [counter(m["content"]) for m in messages]
    tokens = sum(content_tokens) + MESSAGE_OVERHEAD_TOKENS * len(messages) + REPLY_PRIMING_TOKENS
    if tokens > max_tokens:
        found.error("too_long", f"{tokens:,} tokens > {max_tokens:,} per example (the service truncates "
                                "or refuses it): shorten or split the example")
        return None
    key = json.dumps(messages, sort_keys=True, ensure_ascii=False)
    if key in seen:
        found.error("duplicate", f"same messages as line {seen[key]}")
        return None
    seen[key] = number
    trained = sum(n for m, n in zip(messages, content_tokens, strict=True)
                  if m["role"] == "assistant" and m.get("weight", 1) == 1)
    return tokens, trained


def validate_file(path: str | Path, *, max_tokens_per_example: int = DEFAULT_MAX_TOKENS,
                  count_tokens: TokenCounter | None = None, model: str | None = None,
                  epochs: int = 3) -> ValidationReport:
    """Check a chat fine-tuning JSONL file (read as bytes: a line that is not UTF-8 is an error).

    A missing file raises FileNotFoundError (a usage error, not a problem of the file).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"fine-tuning file not found: {path}")
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # the newline ending the last line does not start another line
    return validate_lines(lines, path=path, max_tokens_per_example=max_tokens_per_example,
                          count_tokens=count_tokens, model=model, epochs=epochs)


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """Print the summary; 0 when the file is ok, 1 when it has errors, 2 for a usage error."""
    parser = argparse.ArgumentParser(prog="python -m labkit.finetune.validate",
                                     description="Check a chat fine-tuning JSONL file offline.")
    parser.add_argument("file", help="the training (or validation) file, OpenAI chat JSONL format")
    parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS,
                        help=f"tokens allowed per example (default {DEFAULT_MAX_TOKENS})")
    parser.add_argument("--model", default=None, help="model to fine-tune (prices the training)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs (default 3)")
    args = parser.parse_args(argv)
    try:
        report = validate_file(args.file, max_tokens_per_example=args.max_tokens, model=args.model,
                               epochs=args.epochs)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
