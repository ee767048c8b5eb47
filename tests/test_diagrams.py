"""The two teaching pictures render offline and name what they show."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

from labkit import diagrams  # noqa: E402


def _texts(fig) -> str:
    return "\n".join(t.get_text() for ax in fig.axes for t in ax.texts)


def test_services_diagram_names_each_part_and_its_port(clean_env) -> None:
    clean_env.setenv("LABKIT_MODEL_PORT", "9181")
    fig = diagrams.services_diagram()
    text = _texts(fig)
    for part in ("Jupyter kernel", "127.0.0.1:9181", "Azure AI Search REST API", "SQLite", "openai SDK"):
        assert part in text


def test_flow_diagram_has_the_five_steps_in_order(tmp_path) -> None:
    fig = diagrams.flow_diagram()
    text = _texts(fig)
    positions = [text.index(name) for name, _ in diagrams.FLOW_STEPS]
    assert positions == sorted(positions) and len(positions) == 5 and "ChatResult" in text
    fig.savefig(tmp_path / "flow.png")
    assert (tmp_path / "flow.png").stat().st_size > 1000
