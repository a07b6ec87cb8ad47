"""The Python blocks of the README and of the documentation pages run as written and print what the pages show
(see readme_tour.py for the rules). Each block after the README's first starts from `ms` and `model` alone, as
the README says."""

import subprocess
import sys
from pathlib import Path

import pytest

import mechscope as ms
from readme_tour import Block, blocks, compare, pages, run_block

BLOCKS = [block for page in pages() for block in blocks(page)]


def test_the_readme_has_its_tour_and_every_skip_gives_a_reason():
    assert len(BLOCKS) >= 20 and BLOCKS[0].heading == "Quick tour" and BLOCKS[0].page == "README.md"
    assert {b.page for b in BLOCKS} >= {"README.md", "docs/guide/circuits.md", "docs/guide/features.md"}
    assert "model = ms.load(" in BLOCKS[0].code
    for block in BLOCKS:
        assert block.skip is None or len(block.skip) > 20, block.name


def test_the_comparison_is_strict_where_it_should_be():
    """Text exactly, integers exactly, names with digits exactly, decimals to their printed precision."""
    assert compare("[[(' Paris', 0.773)]]", "[[(' Paris', 0.7731)]]\n") is None
    assert compare("[[(' Paris', 0.773)]]", "[[(' Rome', 0.773)]]") is not None
    assert compare("L23H4 -1.70, 70651 edges", "L23H4 -1.71, 70651 edges") is None
    assert compare("L23H4 -1.70", "L21H4 -1.70") is not None  # a name is text
    assert compare("70651 edges", "70652 edges") is not None  # a count is exact
    assert compare("loss 0.50", "loss 0.60") is not None
    assert compare("in 0.024 s: y0 ∈ [0.02812, 0.2153]", "in 0.031 s: y0 ∈ [0.02812, 0.2153]") is None  # a timing
    assert compare("first ... last 1.0", "first a\nb c last 1.0") is None
    assert compare("done", "done\nand more") is not None  # the README must show (or elide) everything
    assert compare("step 600; best L1H2 0.87", "step 700; best L0H3 0.51", numbers=False) is None
    assert compare("x 1.00  (a remark for the reader)", "x 1.00") is None


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.name for b in BLOCKS])
def test_readme_block_runs_and_prints_what_the_readme_shows(block: Block, smollm, tmp_path, monkeypatch):
    if block.skip:
        pytest.skip(block.skip)
    monkeypatch.chdir(tmp_path)
    for command in block.setup:
        done = subprocess.run([sys.executable, "-m", "mechscope", *command.split()[1:]], capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    namespace = {} if block is BLOCKS[0] else {"ms": ms, "model": smollm}
    differences = [f"{block.page} line {c.line}: {c.source.splitlines()[0]}\n{d}" for c in run_block(block, namespace)
                   if (d := compare(c.expected, c.actual, numbers=not block.trained))]
    assert not differences, "\n\n".join(differences)
