"""Two pictures a learner would rather look at than read: the local services, and the flow's five steps.

Introduced in notebooks/00_setup.ipynb (`services_diagram`) and notebooks/03_build_rag.ipynb
(`flow_diagram`). Plain matplotlib boxes and arrows, so they render offline and in any viewer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

_BOX = {"boxstyle": "round,pad=0.45", "linewidth": 1.2}
_COLOURS = {"you": "#e8f0fe", "service": "#e6f4ea", "store": "#fef7e0", "step": "#f3e8fd",
            "result": "#fce8e6"}


def _box(ax: Any, x: float, y: float, text: str, kind: str) -> None:
    ax.text(x, y, text, ha="center", va="center", fontsize=9.5, wrap=True,
            bbox={**_BOX, "facecolor": _COLOURS[kind], "edgecolor": "#5f6368"})


def _arrow(ax: Any, start: tuple[float, float], end: tuple[float, float], label: str = "") -> None:
    ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "#5f6368", "lw": 1.3})
    if label:
        ax.text((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 + 0.035, label, ha="center", va="bottom",
                fontsize=8, color="#3c4043")


def _canvas(width: float, height: float, title: str) -> tuple[Any, Any]:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    return fig, ax


def services_diagram(settings: Any = None) -> Any:
    """The embedded default: the notebook kernel talks to two local HTTP services and one SQLite file,
    through the same SDKs it would use in the cloud (ports from the settings). Returns the Figure."""
    from labkit.config import get_settings

    settings = settings or get_settings()
    model_url = f"127.0.0.1:{settings.labkit_model_port}"
    search_url = f"127.0.0.1:{settings.labkit_search_port}"
    store_path = "LABKIT_HOME/store/customers.sqlite"
    fig, ax = _canvas(10, 3.6, "What runs on your machine (the embedded default)")
    _box(ax, 0.13, 0.5, "Jupyter kernel\n(this notebook)\nlabkit + MiniLM\nembeddings", "you")
    _box(ax, 0.62, 0.85, f"model server  {model_url}\nllama.cpp + SmolLM2-135M\nOpenAI API", "service")
    _box(ax, 0.62, 0.5, f"search service  {search_url}\nAzure AI Search REST API\nkeyword, vector, hybrid",
         "service")
    _box(ax, 0.62, 0.13, f"SQLite  {store_path}\ncustomers and orders", "store")
    _arrow(ax, (0.25, 0.58), (0.45, 0.83), "openai SDK")
    _arrow(ax, (0.25, 0.5), (0.43, 0.5), "azure-search-documents")
    _arrow(ax, (0.25, 0.42), (0.45, 0.16), "sqlite3")
    ax.text(0.99, 0.01, "with credentials: Azure OpenAI / OpenAI, Azure AI Search, Cosmos DB - same code",
            ha="right", va="bottom", fontsize=8, style="italic", color="#5f6368")
    fig.tight_layout()
    return fig


FLOW_STEPS: Sequence[tuple[str, str]] = (
    ("1 customer", "store: profile\n+ all orders"),
    ("2 queries", "model: JSON\nsearch queries"),
    ("3 retrieval", "search: hybrid,\nfilters, top-k"),
    ("4 prompt", "persona, rules,\ndocuments, orders"),
    ("5 answer", "model: answer;\ncitations checked"),
)


def flow_diagram(steps: Sequence[tuple[str, str]] = FLOW_STEPS) -> Any:
    """The Contoso Chat flow: question and customer in, five steps, one ChatResult out."""
    fig, ax = _canvas(11, 2.6, "The Contoso Chat flow (labkit.flow.answer)")
    xs = [0.07 + i * (0.86 / (len(steps) + 1)) for i in range(len(steps) + 2)]
    _box(ax, xs[0], 0.5, "question\n+ customer id", "you")
    for i, (name, what) in enumerate(steps, start=1):
        _box(ax, xs[i], 0.5, f"{name}\n{what}", "step")
    _box(ax, xs[-1], 0.5, "ChatResult\nanswer, citations,\ncontext, usage", "result")
    for a, b in zip(xs, xs[1:], strict=False):
        _arrow(ax, (a + 0.055, 0.5), (b - 0.055, 0.5))
    ax.text(0.5, 0.04, "every step is a span in one trace; request_id = trace id", ha="center", fontsize=8,
            style="italic", color="#5f6368")
    fig.tight_layout()
    return fig
