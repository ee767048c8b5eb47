"""Progress bars that look right wherever the work runs.

Introduced in notebooks/01_ideate_prompts.ipynb (the bulk test's bar); the index build and the
evaluation runner use the same bars.

- JupyterLab, Notebook 7 or VS Code (a front end that renders widgets): a live widget bar.
- A terminal (the `labkit` CLI, a script): tqdm's text bar on stderr.
- A notebook run headlessly (papermill, nbclient, `make workshop`): one line with the final count
  and time, printed when the work ends. A live bar would be saved as its first state ("0%") above
  the result, which is what a reader of the executed copy would then see.
- `LABKIT_CI=1`, `TQDM_DISABLE=1` or `enabled=False`: no bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any

from labkit.config import get_settings

# environment variables that only a widget-capable front end sets for its kernels
_FRONTEND_ENV = ("JPY_SESSION_NAME", "VSCODE_PID", "VSCODE_CWD", "VSCODE_IPC_HOOK_CLI", "COLAB_RELEASE_TAG")


def progress_enabled(progress: bool = True) -> bool:
    """False when asked, or when TQDM_DISABLE=1 or LABKIT_CI=1 is set."""
    if not progress:
        return False
    if os.environ.get("TQDM_DISABLE", "").strip().lower() in {"1", "true", "yes"}:
        return False
    return not get_settings().labkit_ci


def in_kernel() -> bool:
    """True inside a Jupyter kernel (attached to a front end or run headlessly)."""
    shell = sys.modules.get("IPython")
    ipython = shell.get_ipython() if shell is not None else None  # type: ignore[attr-defined]
    return ipython is not None and getattr(ipython, "kernel", None) is not None


def widget_frontend_available() -> bool:
    """True when an interactive front end that renders ipywidgets is (very likely) attached."""
    if get_settings().labkit_ci or not in_kernel():
        return False
    try:
        from ipywidgets import Widget

        if getattr(Widget, "_control_comm", None) is not None:  # a widget manager said hello
            return True
    except ImportError:
        return False
    # Jupyter Server and VS Code set these for the kernels they start; papermill and nbclient do not.
    return any(os.environ.get(name) for name in _FRONTEND_ENV)


def _final_line_bar() -> type:
    from tqdm.std import tqdm

    class FinalLineBar(tqdm):  # type: ignore[misc, valid-type]
        """Silent while running; prints its final state once, on close."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, delay=float("inf"), file=sys.stdout, **kwargs)
            self._final_printed = False

        def display(self, *args: Any, **kwargs: Any) -> None:
            """Nothing while running: `set_postfix` and `refresh` draw regardless of `delay`."""

        def close(self) -> None:
            if not self.disable and not self._final_printed:
                self._final_printed = True
                print(self.format_meter(**self.format_dict), file=sys.stdout, flush=True)
            super().close()

    return FinalLineBar


def bar(iterable: Iterable[Any] | None = None, *, total: int | None = None, initial: int = 0, desc: str = "",
        unit: str = "it", enabled: bool = True) -> Any:
    """A tqdm bar of the right kind for where this runs (see the module docstring)."""
    kwargs: dict[str, Any] = {"total": total, "initial": initial, "desc": desc, "unit": unit}
    if not progress_enabled(enabled):
        from tqdm.std import tqdm

        return tqdm(iterable, disable=True, **kwargs)
    if widget_frontend_available():
        from tqdm.notebook import tqdm as widget_bar

        return widget_bar(iterable, **kwargs)
    if in_kernel():
        return _final_line_bar()(iterable, **kwargs)
    from tqdm.std import tqdm

    return tqdm(iterable, **kwargs)
