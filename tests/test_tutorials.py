"""The tutorials (docs/tutorials/*.ipynb): saved with their outputs, each starting by checking its kernel; the quick
ones executed here top to bottom (the longer ones by `make tutorials`); an executed notebook exported to HTML and
opened in Chromium offline, its viewers working."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "tutorials"))
import execute  # noqa: E402  (docs/tutorials/execute.py)

TUTORIALS = execute.tutorials()
QUICK = ("01-first-look", "05-compiled-ground-truth", "06-proving-properties")  # well under a minute each


def test_every_tutorial_is_saved_with_its_outputs_and_checks_its_kernel():
    assert len(TUTORIALS) >= 6 and all(q in {p.stem for p in TUTORIALS} for q in QUICK)
    for path in TUTORIALS:
        book = nbformat.read(path, as_version=4)
        assert book.metadata.kernelspec.name == execute.KERNEL, path.name
        code = [c for c in book.cells if c.cell_type == "code"]
        assert "assert Path(sys.prefix).resolve() == (ROOT / \".venv\").resolve()" in code[0].source, path.name
        outputs = [o for c in code for o in c.outputs]
        assert not [o for o in outputs if o.output_type == "error"], path.name
        assert all(c.outputs for c in code), f"{path.name}: a cell was saved without its output"
        html = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})]
        assert any('class="mechscope-output"' in h for h in html), f"{path.name}: no result drawn"
        assert "widgets" not in book.metadata, f"{path.name}: progress bars saved as widgets (execute.py settles them)"
        assert book.metadata.mechscope["seconds"] > 0


def test_a_saved_progress_bar_is_the_text_of_its_last_state():
    book = nbformat.v4.new_notebook()
    ids = ["box", "left", "bar", "right"]
    state = {"box": {"model_name": "HBoxModel", "state": {"children": [f"IPY_MODEL_{i}" for i in ids[1:]]}},
             "left": {"model_name": "HTMLModel", "state": {"value": "edges: 100%"}},
             "bar": {"model_name": "FloatProgressModel", "state": {"value": 5, "max": 5}},
             "right": {"model_name": "HTMLModel", "state": {"value": " 5/5 [00:01&lt;00:00,  4.2it/s]"}}}
    book.metadata["widgets"] = {execute.WIDGET_STATE: {"state": state}}
    book.cells.append(nbformat.v4.new_code_cell("run()", outputs=[nbformat.v4.new_output(
        "display_data", data={execute.WIDGET_VIEW: {"model_id": "box"}, "text/plain": "edges:   0%|"})]))
    assert execute.settle_progress_bars(book) == 1
    assert book.cells[0].outputs[0].data == {"text/plain": "edges: 100%|██████████| 5/5 [00:01<00:00,  4.2it/s]"}
    assert "widgets" not in book.metadata


@pytest.mark.slow
@pytest.mark.parametrize("name", QUICK)
def test_a_quick_tutorial_runs_top_to_bottom(name):
    if not execute.kernel_installed():
        pytest.skip("no kernel 'mechscope' (make test installs it)")
    book, seconds = execute.execute(ROOT / "docs" / "tutorials" / f"{name}.ipynb")
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any('class="mechscope-output"' in o.get("data", {}).get("text/html", "") for o in outputs)
