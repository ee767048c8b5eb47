"""The model playground: two prompts side by side, with model, temperature and max tokens controls.

Introduced in notebooks/01_ideate_prompts.ipynb.

In JupyterLab, Notebook 7 or VS Code, `playground()` returns ipywidgets controls. Where no front end
can show widgets (papermill, nbval, a plain Python process, `LABKIT_CI=1`), it prints one run of
each side instead, so a headless run still shows what the playground does.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from labkit import costs, models, tracing
from labkit.config import get_settings
from labkit.progress import widget_frontend_available
from labkit.prompts import Prompt, list_prompts, load_prompt

if TYPE_CHECKING:
    from openai import OpenAI

FREE_TEXT = "(free text)"
DEFAULT_SYSTEM = "You are a helpful assistant for Contoso Outdoors, a shop for hiking and camping gear."


@dataclass
class PlaygroundRun:
    """One run of one side of the playground."""

    label: str
    text: str
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float
    model: str
    cost: costs.Cost
    error: str | None = None
    temperature: float | None = None  # the temperature the call used

    def summary(self) -> str:
        if self.error:
            return f"error: {self.error}"
        usd = "unpriced" if self.cost.usd is None else f"${self.cost.usd:.6f}"
        temp = "" if self.temperature is None else f", temperature {self.temperature:g}"
        return (f"{self.input_tokens} in / {self.output_tokens} out tokens, {self.latency_s:.2f} s, "
                f"{usd} ({self.model}{temp})")


def _source(source: str | Prompt) -> Prompt | None:
    if isinstance(source, Prompt):
        return source
    return None if source == FREE_TEXT else load_prompt(source)


def run_side(source: str | Prompt, question: str, *, label: str = "", system: str = DEFAULT_SYSTEM,
             model: str | None = None, temperature: float | None = None, max_tokens: int = 128,
             seed: int | None = None, extra_inputs: Mapping[str, Any] | None = None,
             client: OpenAI | None = None) -> PlaygroundRun:
    """One call: a prompt file (inputs from its `sample`, `question` replaced) or free text.

    `temperature=None` keeps the prompt file's own temperature (free text: 0), so the playground
    gives the same answer as running the prompt file; a number overrides it."""
    params: dict[str, Any] = {"max_tokens": max_tokens, "seed": seed}
    name = model or models.chat_model_name()
    label = label or (source.name if isinstance(source, Prompt) else str(source))
    used = temperature
    try:
        prompt = _source(source)
        with tracing.purpose("playground"):
            if prompt is None:
                used = 0.0 if temperature is None else temperature
                reply = models.chat(question, system=system or None, model=name, client=client,
                                    temperature=used, **params)
            else:
                if temperature is not None:
                    params["temperature"] = temperature
                used = params.get("temperature", prompt.parameters.get("temperature"))
                inputs = {**prompt.sample, **(extra_inputs or {}), "question": question}
                reply = prompt.run(client, model=name, params=params, **inputs)
    except Exception as exc:  # show the error in the playground, do not raise from a button click
        return PlaygroundRun(label, "", None, None, 0.0, name, costs.estimate_cost(name, 0, 0),
                             f"{type(exc).__name__}: {exc}", used)
    tokens_in, tokens_out = reply.usage.get("input_tokens"), reply.usage.get("output_tokens")
    return PlaygroundRun(label, reply.text, tokens_in, tokens_out, reply.latency_s, reply.model,
                         costs.estimate_cost(reply.model, tokens_in, tokens_out), temperature=used)


class SideBySide:
    """Texts in columns: an HTML table in a notebook, labelled blocks as plain text."""

    def __init__(self, columns: Mapping[str, str], footers: Mapping[str, str] | None = None):
        self.columns = dict(columns)
        self.footers = dict(footers or {})

    def _repr_html_(self) -> str:
        head = "".join(f"<th style='text-align:left'>{html.escape(k)}</th>" for k in self.columns)
        cell = "<td style='vertical-align:top;text-align:left;white-space:pre-wrap'>{}</td>"
        body = "".join(cell.format(html.escape(v)) for v in self.columns.values())
        foot = ""
        if self.footers:
            foot = "<tr>" + "".join(
                cell.format(f"<small>{html.escape(self.footers.get(k, ''))}</small>") for k in self.columns
            ) + "</tr>"
        return f"<table><tr>{head}</tr><tr>{body}</tr>{foot}</table>"

    def __repr__(self) -> str:
        blocks = []
        for key, value in self.columns.items():
            footer = f"\n  ({self.footers[key]})" if key in self.footers else ""
            blocks.append(f"== {key} ==\n{value}{footer}")
        return "\n\n".join(blocks)


def side_by_side(columns: Mapping[str, str], footers: Mapping[str, str] | None = None) -> SideBySide:
    """Show texts next to each other (the last expression of a cell displays it)."""
    return SideBySide(columns, footers)


def _print_runs(runs: Sequence[PlaygroundRun], reason: str) -> None:
    print(f"Playground: {reason}; one run of each side with the default settings.\n")
    for run in runs:
        print(f"== {run.label} ==\n{run.text.strip() or '(no text)'}\n  ({run.summary()})\n")


def playground(prompts: Sequence[str | Prompt] | None = None, *, question: str | None = None,
               inputs: Mapping[str, Any] | None = None, model: str | None = None,
               temperature: float | None = None, max_tokens: int = 128, seed: int | None = None,
               mode: str = "auto", client: OpenAI | None = None) -> Any:
    """Two prompts side by side. Returns the widget (display it) or prints one run headlessly.

    `temperature=None`: each prompt file's own temperature, until the learner moves the slider.

    `prompts`: prompt names or `Prompt`s for the choosers (default: every file in `prompts/`); the
    first two start selected. A prompt file gets its `sample` inputs, updated with `inputs` and the
    question. `mode`: "auto" (detect a front end), "widgets" or "print".
    """
    choices: list[str | Prompt] = list(prompts) if prompts else list(list_prompts())
    names = [c.name if isinstance(c, Prompt) else c for c in choices]
    by_name = {n: c for n, c in zip(names, choices, strict=True)}
    left = names[0] if names else FREE_TEXT
    right = names[1] if len(names) > 1 else FREE_TEXT
    question = question or "Which tent would you recommend for two people backpacking in summer?"
    client = client or models.chat_client()
    model = model or models.chat_model_name()

    use_widgets = mode == "widgets" or (mode == "auto" and widget_frontend_available())
    if not use_widgets:
        reason = "LABKIT_CI=1" if get_settings().labkit_ci else "no widget front end attached"
        runs = [run_side(by_name.get(side, side), question, model=model, temperature=temperature,
                         max_tokens=max_tokens, seed=seed, extra_inputs=inputs, client=client)
                for side in (left, right)]
        _print_runs(runs, reason if mode == "auto" else "print mode")
        return None
    return _widgets(by_name, left, right, question, inputs or {}, model, temperature, max_tokens, seed,
                    client)


def _widgets(by_name: Mapping[str, str | Prompt], left: str, right: str, question: str,
             inputs: Mapping[str, Any], model: str, temperature: float | None, max_tokens: int,
             seed: int | None, client: OpenAI) -> Any:
    import ipywidgets as w

    try:
        available = models.list_models(client)
    except Exception:  # Azure may not list deployments: offer the configured one
        available = []
    model_options = sorted({model, *available})
    options = [*by_name, FREE_TEXT]
    layout = w.Layout(width="98%")

    question_box = w.Textarea(value=question, description="Question", layout=layout)
    model_box = w.Dropdown(options=model_options, value=model, description="Model")
    temperature_box = w.FloatSlider(value=0.0 if temperature is None else temperature, min=0.0, max=2.0,
                                    step=0.1, description="Temperature")
    from_file = w.Checkbox(value=temperature is None, description="prompt file's temperature")
    # moving the slider means the learner wants that temperature on both sides
    temperature_box.observe(lambda _change: setattr(from_file, "value", False), names="value")
    tokens_box = w.IntSlider(value=max_tokens, min=8, max=1024, step=8, description="Max tokens")
    seed_box = w.IntText(value=seed if seed is not None else 0, description="Seed (0=none)")
    run_button = w.Button(description="Run both", button_style="primary")

    def side(initial: str) -> tuple[w.Dropdown, w.Textarea, w.Output, w.VBox]:
        chooser = w.Dropdown(options=options, value=initial, description="Prompt")
        system = w.Textarea(value=DEFAULT_SYSTEM, description="System", layout=layout,
                            disabled=initial != FREE_TEXT)
        chooser.observe(lambda change: setattr(system, "disabled", change["new"] != FREE_TEXT), names="value")
        out = w.Output(layout=w.Layout(border="1px solid #ccc", min_height="120px"))
        return chooser, system, out, w.VBox([chooser, system, out], layout=w.Layout(width="50%"))

    a_choice, a_system, a_out, a_box = side(left)
    b_choice, b_system, b_out, b_box = side(right)

    def on_click(_: Any) -> None:
        for choice, system, out in ((a_choice, a_system, a_out), (b_choice, b_system, b_out)):
            out.clear_output()
            with out:
                print("running ...")
            source = by_name.get(choice.value, choice.value)
            result = run_side(source, question_box.value, system=system.value, model=model_box.value,
                              temperature=None if from_file.value else temperature_box.value,
                              max_tokens=tokens_box.value,
                              seed=seed_box.value or None, extra_inputs=inputs, client=client)
            out.clear_output()
            with out:
                print(result.text.strip() or "(no text)")
                print(f"\n({result.summary()})")

    run_button.on_click(on_click)
    controls = w.HBox([w.VBox([model_box, temperature_box, from_file]), w.VBox([tokens_box, seed_box]),
                       run_button])
    return w.VBox([question_box, controls, w.HBox([a_box, b_box])])
