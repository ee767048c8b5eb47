"""A small chat widget over the Contoso Chat flow (ipywidgets), with plain output when headless.

Introduced in notebooks/03_build_rag.ipynb.
"""

from __future__ import annotations

from typing import Any

from labkit import flow
from labkit.playground import widget_frontend_available


def format_result(result: flow.ChatResult) -> str:
    sources = " ".join(f"[{c}]" for c in result.citations) or "(none)"
    dropped = ", ".join(result.dropped_citations)
    note = f"\n(dropped citations, not among the retrieved documents: {dropped})" if dropped else ""
    return (f"{result.answer}\nSources: {sources}{note}\n"
            f"[{result.timings.get('total', 0):.1f} s, {result.usage['input_tokens']} in / "
            f"{result.usage['output_tokens']} out tokens, request {result.request_id[:8]}]")


def chat_widget(customer_id: str, config: flow.FlowConfig | None = None, *, question: str | None = None,
                mode: str = "auto") -> Any:
    """Text box + send button + transcript; multi-turn history is kept between messages.

    Headless (papermill, CI, plain Python): answers `question` once and prints the exchange.
    """
    history: list[dict[str, str]] = []
    use_widgets = mode == "widgets" or (mode == "auto" and widget_frontend_available())
    if not use_widgets:
        if question:
            result = flow.answer(question, customer_id, config=config)
            print(f"customer {customer_id}: {question}\nassistant: {format_result(result)}")
            print("(plain output: no widget front end is attached)")
        return None

    import ipywidgets as widgets

    box = widgets.Text(placeholder="Ask Contoso Chat...", value=question or "", layout={"width": "70%"})
    send = widgets.Button(description="Send", button_style="primary")
    transcript = widgets.Output(layout={"border": "1px solid #ccc", "padding": "6px"})

    def on_send(_: Any) -> None:
        text = box.value.strip()
        if not text:
            return
        box.value = ""
        with transcript:
            print(f"you: {text}")
            try:
                result = flow.answer(text, customer_id, history=history, config=config)
            except (flow.FlowInputError, LookupError) as exc:
                print(f"error: {exc}")
                return
            print(f"assistant: {format_result(result)}\n")
        history.extend([{"role": "user", "content": text}, {"role": "assistant", "content": result.answer}])

    send.on_click(on_send)
    box.on_submit(on_send)
    return widgets.VBox([widgets.HBox([box, send]), transcript])
