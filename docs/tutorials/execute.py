"""Run the tutorials as a reader does, top to bottom, in the kernel "mechscope (.venv)".

    .venv/bin/python docs/tutorials/execute.py [--write] [NAME ...]

Without names: every tutorial. ``--write`` saves each executed notebook in place (its outputs are what
the documentation site shows); without it nothing is written. Progress bars run in the notebook form (tqdm's
widgets) while a tutorial executes; a saved notebook keeps each bar as the text of its last state, since a
widget's saved view shows its first state wherever no widget manager runs (GitHub, an offline export, the
site). A cell that raises stops its notebook and
the run exits 1. ``make tutorials`` runs them all with ``--write``; the suite runs them through
``execute`` (tests/test_tutorials.py)."""

from __future__ import annotations

import argparse
import html
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent
KERNEL = "mechscope"  # installed by `make test`: .venv/bin/python -m ipykernel install --sys-prefix --name mechscope
CELL_TIMEOUT = 900  # seconds; the longest cell (training transcoders) takes a few minutes


def tutorials() -> list[Path]:
    return sorted(HERE.glob("[0-9][0-9]-*.ipynb"))


def kernel_installed() -> bool:
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL in KernelSpecManager().find_kernel_specs()


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"


def settle_progress_bars(book: nbformat.NotebookNode) -> int:
    """Replace every tqdm bar (an HBox of HTML, FloatProgress, HTML widgets) by the text of its last state, and
    drop the widget state; returns the number of bars settled. Other widgets are left as they are."""
    models = book.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    settled = 0
    for cell in book.cells:
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            box = models.get(view["model_id"]) if view else None
            children = [models.get(c.replace("IPY_MODEL_", ""), {}) for c in (box or {}).get("state", {}).get("children", [])]
            if [c.get("model_name") for c in children] != ["HTMLModel", "FloatProgressModel", "HTMLModel"]:
                continue
            left, bar, right = (c["state"] for c in children)
            done = bar.get("value", 0) / bar["max"] if bar.get("max") else 0.0
            filled = int(round(10 * min(1.0, max(0.0, done))))
            text = f"{left.get('value', '')}|{'█' * filled}{' ' * (10 - filled)}|{right.get('value', '')}"
            output["data"] = {"text/plain": html.unescape(text)}
            output.get("metadata", {}).pop(WIDGET_VIEW, None)
            settled += 1
    if settled and not any(WIDGET_VIEW in o.get("data", {}) for c in book.cells for o in c.get("outputs", [])):
        book.metadata.pop("widgets", None)
    return settled


def execute(path: Path, *, write: bool = False) -> tuple[nbformat.NotebookNode, float]:
    """``path`` executed in the tutorials' folder: (the notebook with its outputs, seconds)."""
    if not kernel_installed():
        raise RuntimeError(f"no Jupyter kernel {KERNEL!r}: install it with "
                           f"`.venv/bin/python -m ipykernel install --sys-prefix --name {KERNEL}` (make test does)")
    book = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(book, kernel_name=KERNEL, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(HERE)}}).execute()
    seconds = time.perf_counter() - t0
    if write:
        settle_progress_bars(book)
        book.metadata.setdefault("mechscope", {})["seconds"] = round(seconds)
        nbformat.write(book, path)
    return book, seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="tutorials by file name or number prefix (default: all)")
    parser.add_argument("--write", action="store_true", help="save the outputs into the notebooks")
    args = parser.parse_args(argv)
    chosen = [p for p in tutorials() if not args.names or any(p.name.startswith(n) or p.stem == n for n in args.names)]
    if args.names and not chosen:
        parser.error(f"no tutorial matches {args.names}; there are: {', '.join(p.stem for p in tutorials())}")
    for path in chosen:
        try:
            _, seconds = execute(path, write=args.write)
        except Exception as err:  # nbclient's CellExecutionError carries the cell and its traceback
            print(f"{path.name}: FAILED\n{err}", file=sys.stderr)
            return 1
        print(f"{path.name}: {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
