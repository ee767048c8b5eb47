"""Benchmark: the local model service over the OpenAI API vs llama-cpp-python in-process.

Same model file, same threads and context, a ~1,300-token prompt, streaming. Prints time to
first token (TTFT) and decode tokens/s for both, and the ratio service / in-process (goal: decode
ratio >= 0.95). Runs are interleaved and each uses a fresh prompt prefix, so neither side profits
from a cached prompt and machine noise hits both alike.

    .venv/bin/python benchmarks/model_service.py [--runs 5] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from labkit.config import Settings  # noqa: E402
from labkit.services import ensure_running, stop  # noqa: E402
from labkit.services.manager import default_model_path  # noqa: E402

PARAGRAPH = (
    "The Contoso Outdoors catalog lists tents, backpacks, sleeping bags, boots, jackets, stoves, chairs and "
    "navigation devices. Each product has a manual with features, specifications, care instructions, "
    "cautions, warranty terms, return rules and answers to frequent questions from customers. "
)


def make_prompt(run: int, target_tokens: int, count) -> list[dict[str, str]]:
    body = f"Request {run}. " + PARAGRAPH
    while count(body) < target_tokens:
        body += PARAGRAPH
    return [{"role": "system", "content": "You are a helpful assistant for Contoso Outdoors."},
            {"role": "user", "content": body + "\nSummarise the catalog in a long paragraph."}]


def measure(chunks: Iterable, start: float) -> tuple[float, float, int]:
    """(ttft seconds, decode tokens/s, tokens) from a stream of chat-completion chunks."""
    times = []
    for chunk in chunks:
        choices = chunk["choices"] if isinstance(chunk, dict) else chunk.choices
        if not choices:
            continue
        delta = choices[0]["delta"] if isinstance(chunk, dict) else choices[0].delta
        content = delta.get("content") if isinstance(delta, dict) else delta.content
        if content:
            times.append(time.perf_counter())
    if len(times) < 2:
        return float("nan"), float("nan"), len(times)
    return times[0] - start, (len(times) - 1) / (times[-1] - times[0]), len(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--prompt-tokens", type=int, default=1300)
    args = parser.parse_args()

    import openai
    from llama_cpp import Llama

    home = tempfile.mkdtemp(prefix="labkit-bench-")
    os.environ["LABKIT_HOME"] = home
    settings = Settings(labkit_home=Path(home), labkit_model_port=int(os.environ.get("BENCH_PORT", "8091")))
    threads, n_ctx = settings.labkit_model_threads, settings.labkit_model_ctx
    state = ensure_running(["model"], settings=settings)["model"]
    client = openai.OpenAI(base_url=state.base_url + "/v1", api_key="x", max_retries=0, timeout=300)
    model_name = settings.labkit_local_chat_model

    llm = Llama(model_path=str(default_model_path()), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                logits_all=False, verbose=False)

    def count(text: str) -> int:
        return len(llm.tokenize(text.encode()))

    prompt_tokens = count(make_prompt(0, args.prompt_tokens, count)[1]["content"])
    print(f"model {default_model_path().name}, threads {threads}, n_ctx {n_ctx}, "
          f"prompt ~{prompt_tokens} tokens, max_tokens {args.max_tokens}, runs {args.runs}")

    service, local = [], []
    try:
        # warm-up both (model load, first allocation)
        warm = make_prompt(-1, 64, count)
        list(client.chat.completions.create(model=model_name, messages=warm, max_tokens=8, stream=True))
        list(llm.create_chat_completion(messages=warm, max_tokens=8, stream=True))
        for run in range(args.runs):
            for side in ("service", "local") if run % 2 == 0 else ("local", "service"):
                messages = make_prompt(run * 2 + (side == "local"), args.prompt_tokens, count)
                kwargs = {"max_tokens": args.max_tokens, "temperature": 0.0, "seed": 1}
                start = time.perf_counter()
                if side == "service":
                    stream = client.chat.completions.create(model=model_name, messages=messages, stream=True,
                                                            **kwargs)
                    service.append(measure(stream, start))
                else:
                    stream = llm.create_chat_completion(messages=messages, stream=True, **kwargs)
                    local.append(measure(stream, start))
    finally:
        stop(settings=settings)

    def med(rows: list[tuple[float, float, int]], i: int) -> float:
        return statistics.median(r[i] for r in rows)

    print(f"{'':12s}{'TTFT p50 (s)':>14s}{'decode tok/s p50':>18s}{'tokens':>8s}")
    for name, rows in (("service", service), ("in-process", local)):
        print(f"{name:12s}{med(rows, 0):14.3f}{med(rows, 1):18.1f}{med(rows, 2):8.0f}")
    decode_ratio = med(service, 1) / med(local, 1)
    ttft_ratio = med(local, 0) / med(service, 0)
    print(f"decode ratio service/in-process: {decode_ratio:.3f} (goal >= 0.95: "
          f"{'PASS' if decode_ratio >= 0.95 else 'MISS'})")
    print(f"TTFT ratio in-process/service:   {ttft_ratio:.3f} (1.0 = no overhead; "
          f"overhead {1000 * (med(service, 0) - med(local, 0)):+.0f} ms)")


if __name__ == "__main__":
    main()
