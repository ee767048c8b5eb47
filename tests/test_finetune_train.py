"""Local LoRA fine-tuning (labkit.finetune.train).

Fast tier: label masking with a toy tokenizer, the answer-only loss on a tiny random model, the
fingerprint, the learning-rate schedule, error messages. Services tier (`isolated_home`): a real
3-step fine-tune of the packaged model, its reuse, the GGUF conversion and serving the adapter.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from labkit.finetune import train as ft
from labkit.finetune.train import (
    IGNORE_INDEX,
    Encoded,
    FineTuneError,
    TrainConfig,
    encode_example,
    encode_examples,
    learning_rate_factor,
)

SYSTEM = "You are Contoso Outdoors' assistant. Answer briefly."
PRODUCTS = [("TrailMaster X4 Tent", "P-1", "4 people"), ("Alpine Explorer Tent", "P-8", "8 people"),
            ("SkyView 2-Person Tent", "P-15", "2 people"), ("CozyNights Sleeping Bag", "P-7", "-5 C"),
            ("Summit Breeze Jacket", "P-3", "waterproof"), ("TrekReady Hiking Boots", "P-4", "size 38-47"),
            ("BaseCamp Folding Table", "P-5", "12 kg load"), ("EcoFire Camping Stove", "P-6", "2 burners"),
            ("Adventurer Pro Backpack", "P-9", "90 litres"), ("TrailBlaze Hiking Pants", "P-10", "quick-dry")]


def chat_examples() -> list[dict[str, Any]]:
    return [{"messages": [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"Hi, I'm Sam. Tell me about the {name}?"},
        {"role": "assistant", "content": f"Hello Sam! The {name} offers {fact}. [{pid}]\nSources: {pid}"},
    ]} for name, pid, fact in PRODUCTS]


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


class ToyTokenizer:
    """ChatML like SmolLM2's template; one token per special token, word, space run or punctuation."""

    eos_token_id = 1
    pad_token_id = 0
    unk_token_id = None
    DEFAULT_SYSTEM = "You are a toy."

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"<pad>": 0, "<|im_end|>": 1, "<|im_start|>": 2}

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = True,
                            add_generation_prompt: bool = False) -> str:
        assert tokenize is False
        if not messages or messages[0]["role"] != "system":
            messages = [{"role": "system", "content": self.DEFAULT_SYSTEM}, *messages]
        text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
        return text + ("<|im_start|>assistant\n" if add_generation_prompt else "")

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        pieces = re.findall(r"<\|im_(?:start|end)\|>|\w+|\s+|[^\w\s]", text)
        return [self.vocab.setdefault(p, len(self.vocab)) for p in pieces]

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.vocab.get(token, -1)

    def decode(self, ids: list[int]) -> str:
        inverse = {v: k for k, v in self.vocab.items()}
        return "".join(inverse[i] for i in ids)


# ---------------------------------------------------------------------------------------------
# fast tier
# ---------------------------------------------------------------------------------------------
def test_labels_cover_only_the_last_answer_and_its_end_of_turn() -> None:
    tok = ToyTokenizer()
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Old answer."},
                {"role": "user", "content": "Tent for 4?"}, {"role": "assistant", "content": "TrailMaster X4."}]
    encoded = encode_example(messages, tok)
    assert encoded is not None and len(encoded.input_ids) == len(encoded.labels)
    trained = [t for t, label in zip(encoded.input_ids, encoded.labels, strict=True) if label != IGNORE_INDEX]
    assert tok.decode(trained) == "TrailMaster X4.<|im_end|>"
    # trained tokens are the tail of the sequence (nothing after the end-of-turn), the rest is context
    n = len(trained)
    assert encoded.labels[-n:] == encoded.input_ids[-n:]
    assert set(encoded.labels[:-n]) == {IGNORE_INDEX}
    assert tok.decode(encoded.input_ids[:-n]).endswith("Tent for 4?<|im_end|>\n<|im_start|>assistant\n")
    assert "Old answer." in tok.decode(encoded.input_ids)  # earlier turns stay as context
    assert "Be brief." in tok.decode(encoded.input_ids) and tok.DEFAULT_SYSTEM not in tok.decode(encoded.input_ids)
    assert encoded.answer_tokens == n


def test_too_long_examples_are_dropped_and_counted_not_truncated() -> None:
    tok = ToyTokenizer()
    short = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    long = [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "Hello."}]
    full = encode_example(short, tok)
    assert full is not None
    assert encode_example(short, tok, max_length=len(full.input_ids)) == full
    assert encode_example(short, tok, max_length=len(full.input_ids) - 1) is None
    kept, dropped = encode_examples([short, long, short], tok, max_length=64)
    assert len(kept) == 2 and dropped == 1


def test_an_example_must_end_with_an_assistant_message(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="assistant"):
        encode_example([{"role": "user", "content": "Hi"}], ToyTokenizer())
    path = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "Hi"}]}])
    with pytest.raises(ValueError, match=r"line 1: .*assistant.*labkit\.finetune\.validate"):
        ft.read_chat_jsonl(path)
    good = write_jsonl(tmp_path / "good.jsonl", chat_examples())
    conversations = ft.read_chat_jsonl(good)
    assert len(conversations) == len(PRODUCTS) and conversations[0][0] == {"role": "system", "content": SYSTEM}


def _tiny_causal_lm() -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(config).eval()


def test_answer_only_loss_matches_the_full_logits_loss_with_padding() -> None:
    import torch

    model = _tiny_causal_lm()
    a = Encoded(input_ids=[5, 6, 7, 8, 9, 10], labels=[IGNORE_INDEX] * 4 + [9, 10])
    b = Encoded(input_ids=[11, 12, 13, 14, 15, 16, 17, 18, 19], labels=[IGNORE_INDEX] * 5 + [15, 16, 17, 18])
    batch = ft.collate([a, b], pad_id=0)
    assert batch["attention_mask"].tolist()[0] == [1] * 6 + [0] * 3
    assert batch["labels"].tolist()[0][6:] == [IGNORE_INDEX] * 3
    with torch.no_grad():
        loss_sum, n = ft.answer_loss(model, batch)
        reference = model(**batch).loss  # transformers: full logits, mean over labelled next tokens
        alone, n_alone = ft.answer_loss(model, ft.collate([a], pad_id=0))
        padded = ft.answer_loss(model, ft.collate([a, b], pad_id=0))
    assert n == 6
    assert math.isclose(float(loss_sum) / n, float(reference), rel_tol=1e-5)
    # right padding changes nothing for the shorter example: its loss alone equals its share in the batch
    with torch.no_grad():
        b_alone, _ = ft.answer_loss(model, ft.collate([b], pad_id=0))
    assert math.isclose(float(alone) + float(b_alone), float(padded[0]), rel_tol=1e-5)
    assert n_alone == 2
    assert ft.evaluate_loss(model, [a, b], batch_size=1, pad_id=0) == pytest.approx(float(reference), rel=1e-5)


def test_fingerprint_changes_with_config_data_and_base() -> None:
    base = "b" * 64
    config = TrainConfig()
    fp = config.fingerprint("d" * 64, base)
    assert fp == TrainConfig().fingerprint("d" * 64, base)  # deterministic
    assert len({fp, TrainConfig(r=8).fingerprint("d" * 64, base),
                TrainConfig(max_steps=3).fingerprint("d" * 64, base),
                config.fingerprint("e" * 64, base), config.fingerprint("d" * 64, "c" * 64)}) == 5
    # same adapter either way: toggling gradient checkpointing reuses a finished run
    assert TrainConfig(gradient_checkpointing=not config.gradient_checkpointing).fingerprint("d" * 64, base) == fp
    with pytest.raises(ValueError):
        config.r = 4  # type: ignore[misc]  # frozen


def test_data_hash_covers_both_files(tmp_path: Path) -> None:
    train = write_jsonl(tmp_path / "train.jsonl", chat_examples())
    valid = write_jsonl(tmp_path / "valid.jsonl", chat_examples()[:2])
    first = ft.data_sha256(train, valid)
    assert first != ft.data_sha256(train) and first == ft.data_sha256(train, valid)
    write_jsonl(valid, chat_examples()[:3])
    assert ft.data_sha256(train, valid) != first


def test_learning_rate_warms_up_then_decays_or_stays() -> None:
    linear = [learning_rate_factor(s, 10, 4) for s in range(10)]
    assert linear[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(x > y for x, y in zip(linear[4:], linear[5:], strict=False)) and linear[-1] > 0
    assert [learning_rate_factor(s, 10, 2, "constant") for s in range(10)][1:] == [1.0] * 9
    assert learning_rate_factor(0, 3, 0) == 1.0


def test_missing_source_archive_names_make_setup(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LABKIT_WHEEL_CACHE", str(tmp_path / "wheels"))
    expected = tmp_path / "wheels" / "llama-cpp-python-9.9.9-GGML_NATIVE_OFF" / "llama_cpp_python-9.9.9.tar.gz"
    assert ft.wheel_cache_dir("9.9.9") == expected.parent
    with pytest.raises(FineTuneError, match="make setup") as info:
        ft.llama_cpp_sdist("9.9.9")
    assert str(expected) in str(info.value)
    monkeypatch.delenv("LABKIT_WHEEL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert ft.wheel_cache_dir("9.9.9") == tmp_path / "xdg" / "labkit" / "wheels" / expected.parent.name


def test_converter_refuses_a_quantized_outtype(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Q4_1"):
        ft.convert_to_gguf(tmp_path, tmp_path / "a.gguf", outtype="q4_1")


def test_cli_missing_file_is_one_line_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = ft.main(["--train", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().count("\n") == 0 and "not found" in err and "nope.jsonl" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# services tier: loads the real model, trains, converts and serves
# ---------------------------------------------------------------------------------------------
def test_fine_tune_convert_and_serve(isolated_home: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    from safetensors.torch import load_file

    from labkit.services import ensure_running

    train = write_jsonl(tmp_path / "train.jsonl", chat_examples()[:8])
    valid = write_jsonl(tmp_path / "valid.jsonl", chat_examples()[8:])
    out = tmp_path / "run"
    config = TrainConfig(max_steps=3, batch_size=2, max_length=256, warmup_steps=1)
    seen: list[ft.StepInfo] = []

    report = ft.train_lora(train, valid, out_dir=out, config=config, progress=False, on_step=seen.append,
                           settings=isolated_home)
    assert not report.reused and report.steps == 3 and [s.step for s in seen] == [1, 2, 3]
    assert len(report.losses) == 3 and all(math.isfinite(x) for x in report.losses)
    assert report.valid_loss is not None and math.isfinite(report.valid_loss) and report.valid_examples == 2
    assert report.examples == 8 and report.dropped_too_long == 0 and report.answer_tokens > 0
    assert report.trainable_params > 0 and report.peak_rss_mb > 0
    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for name, t in weights.items() if "lora_B" in name]
    assert lora_b and any(float(t.abs().sum()) > 0 for t in lora_b)  # initialised at zero, now trained
    assert (out / "fingerprint.txt").read_text().strip() == report.fingerprint
    assert json.loads((out / "report.json").read_text())["fingerprint"] == report.fingerprint

    def must_not_train(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the second run loaded the model instead of reusing the adapter")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ft, "load_base", must_not_train)
        again = ft.train_lora(train, valid, out_dir=out, config=config, progress=False, settings=isolated_home)
    assert again.reused and again.fingerprint == report.fingerprint and again.losses == report.losses

    monkeypatch.chdir(tmp_path)  # relative paths work although the converter runs in another folder
    gguf = ft.convert_to_gguf(Path("run/adapter"), Path("run/adapter.gguf"), settings=isolated_home)
    assert gguf == out / "adapter.gguf" and gguf.is_file() and 0 < gguf.stat().st_size < 20_000_000
    assert gguf.read_bytes()[:4] == b"GGUF"

    ft.serve_adapter("contoso-ft-test", gguf, settings=isolated_home)
    state = ensure_running(["model"], settings=isolated_home)["model"]
    listed = httpx.get(state.base_url + "/v1/models", timeout=60).json()
    assert "contoso-ft-test" in {m["id"] for m in listed["data"]}
    body = {"model": "contoso-ft-test", "max_tokens": 16, "temperature": 0,
            "messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": "Hi, I'm Ana. Tell me about the TrailMaster X4 Tent?"}]}
    response = httpx.post(state.base_url + "/v1/chat/completions", json=body, timeout=300)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"].strip()
