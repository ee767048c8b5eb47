"""What must stay true in an executed notebook whatever the model says (issue: notebooks say what their
outputs show). Each check reads the executed copy and returns the problems it finds."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import nbformat


def _text(cell: Any) -> str:
    parts = []
    for out in cell.get("outputs", []):
        parts.append("".join(out.get("text", "")))
        data = out.get("data", {})
        parts.append("".join(data.get("text/plain", "")))
    return "\n".join(parts)


def _code_cell(nb: Any, marker: str) -> Any:
    cells = [c for c in nb.cells if c.cell_type == "code" and marker in c.source]
    assert len(cells) == 1, f"expected one code cell containing {marker!r}, found {len(cells)}"
    return cells[0]


def _has_image(cell: Any) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def check_common(nb: Any) -> list[str]:
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        text = _text(cell)
        if "  0%|" in text or "\r" in text:  # a live progress bar saved in its first or a middle state
            problems.append(f"cell {i}: a progress bar's intermediate state was saved: {text[:120]!r}")
        if "../data" in cell.source or "../eval" in cell.source:
            problems.append(f"cell {i}: a path relative to notebooks/ (use labkit.repo_path)")
    return problems


def check_00(nb: Any) -> list[str]:
    return [] if _has_image(_code_cell(nb, "services_diagram")) else ["00: the services picture is missing"]


def check_02(nb: Any) -> list[str]:
    text = _text(_code_cell(nb, "by the rule above"))
    return [] if "a gap of" in text else [f"02: the noise verdict is missing: {text[:200]!r}"]


def check_03(nb: Any) -> list[str]:
    problems = []
    if not _has_image(_code_cell(nb, "flow_diagram")):
        problems.append("03: the flow picture is missing")
    demo = _text(_code_cell(nb, "outside = next("))
    if "| dropped: ['P-" not in demo:
        problems.append(f"03: the citation check did not show a dropped citation: {demo!r}")
    widget = _text(_code_cell(nb, "chat_widget("))
    if "Sources:" not in widget:
        problems.append(f"03: the chat answer shows no sources line: {widget[:300]!r}")
    weights = _text(_code_cell(nb, "STREAM_QUESTION = "))
    if "the catalog says:" not in weights or "difference: 0 g" in weights:
        problems.append(f"03: the catalog comparison of the two chairs is missing: {weights[-200:]!r}")
    return problems


def check_04(nb: Any) -> list[str]:
    problems = []
    broken = _text(_code_cell(nb, "broken_cfg = FlowConfig"))
    if "FAIL" not in broken or "would return: 1" not in broken:
        problems.append(f"04: the baseline gate did not fail the no-retrieval variant: {broken!r}")
    compare = _text(_code_cell(nb, "answered_now = []"))
    if "rows answered now:" not in compare:
        problems.append("04: the comparison does not say how many rows it answered")
    return problems


def check_05(nb: Any) -> list[str]:
    problems = []
    if not _has_image(_code_cell(nb, "demo = train.train_lora(")):
        problems.append("05: the demo training shows no loss curve")
    committed = _text(_code_cell(nb, "full = compare.load()"))
    if "fine-tuned+RAG - base+RAG, fact_recall.value" not in committed:
        problems.append("05: the committed comparison does not show the paired fact-recall difference")
    probed = _text(_code_cell(nb, "chosen = probe.swaps("))
    if probed.count("follows the passage in") < 2:
        problems.append("05: the probe does not report both variants")
    return problems


def check_06(nb: Any) -> list[str]:
    problems = []
    if "held-out attacks blocked:" not in _text(_code_cell(nb, "prompts = redteam.score_prompts()")):
        problems.append("06: the red team does not report the held-out block rate")
    if "borderline ones:" not in _text(_code_cell(nb, "benign = redteam.score_benign()")):
        problems.append("06: the false positives on borderline questions are missing")
    if not _has_image(_code_cell(nb, "curve = pd.DataFrame(")):
        problems.append("06: the threshold trade-off plot is missing")
    if "let through" not in _text(_code_cell(nb, "missed = [")):
        problems.append("06: the attacks the guard let through are not listed")
    return problems


def check_07(nb: Any) -> list[str]:
    problems = []
    errors = _text(_code_cell(nb, "not_signed_in = client.post("))
    for code in ("401", "422", "429"):
        if f": {code} " not in errors:
            problems.append(f"07: the {code} is not shown: {errors[:300]!r}")
    if not _has_image(_code_cell(nb, "ax.hist(ok")):
        problems.append("07: the latency histogram is missing")
    if "lk_" in "".join(_text(c) for c in nb.cells if c.cell_type == "code"):
        problems.append("07: a token value appears in an output")
    return problems


def check_08(nb: Any) -> list[str]:
    problems = []
    if not _has_image(_code_cell(nb, "fig = dashboard.plot(week)")):
        problems.append("08: the synthetic dashboard plot is missing")
    if not _has_image(_code_cell(nb, "offline = pd.DataFrame(baseline")):
        problems.append("08: the drift distributions plot is missing")
    summary = _text(_code_cell(nb, "week = dashboard.build("))
    if "SYNTHETIC" not in summary:
        problems.append(f"08: the synthetic dashboard is not labelled synthetic: {summary[:200]!r}")
    verdicts = _text(_code_cell(nb, "before = scores[("))
    last_day = verdicts.split("the last day:")[-1]
    if ": drifted (" not in last_day:
        problems.append(f"08: no metric drifted on the last synthetic day: {last_day[:400]!r}")
    fired = _text(_code_cell(nb, "for label, moment in"))
    if "FIRED" not in fired.split("at the end:")[-1]:
        problems.append(f"08: no alert fired at the end of the synthetic week: {fired[-400:]!r}")
    stored = _text(_code_cell(nb, "question as stored:"))
    outputs = "".join(_text(c) for c in nb.cells if c.cell_type == "code").lower()
    for personal in ("elena.marsh@example.com", "555-0112", "elena marsh"):
        if personal in outputs:
            problems.append(f"08: personal data in an output: {personal}")
    if "[email]" not in stored or "[name]" not in stored:
        problems.append(f"08: the stored sample is not shown redacted: {stored[:200]!r}")
    return problems


def check_09(nb: Any) -> list[str]:
    problems = []
    decisions = _text(_code_cell(nb, "decisions = {}"))
    if "no-retrieval: REFUSED" not in decisions:
        problems.append(f"09: the no-retrieval candidate was not refused: {decisions[:300]!r}")
    if not _has_image(_code_cell(nb, "tokens = {name:")):
        problems.append("09: the versions plot is missing")
    chain = _text(_code_cell(nb, "lines(registry.lineage("))
    for needed in ("prompt contoso_chat_small", "sha256", "data data/products.json", "model "):
        if needed not in chain:
            problems.append(f"09: the lineage does not show {needed!r}: {chain[:300]!r}")
    outputs = "".join(_text(c) for c in nb.cells if c.cell_type == "code")
    if "lk_" in outputs:
        problems.append("09: a token value appears in an output")
    return problems


CHECKS: dict[str, Callable[[Any], list[str]]] = {"00": check_00, "02": check_02, "03": check_03, "04": check_04,
                                                 "05": check_05, "06": check_06, "07": check_07, "08": check_08,
                                                 "09": check_09}


def problems_in(path: Any) -> list[str]:
    nb = nbformat.read(path, as_version=4)
    check = CHECKS.get(path.name[:2])
    return check_common(nb) + (check(nb) if check else [])
