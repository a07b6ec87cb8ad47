"""The table of model families × what works, written from a test run (never by hand).

`make families` runs the family-parametrized tests with `--family-table`; each column is the set of
tests named below, a cell ✓ when all of that family's ran and passed, ✗ when one failed, and "refused"
when the family's test is the one that checks a refusal by name. The table lands in docs/models.md between
the `families:start` / `families:end` markers.
"""

from __future__ import annotations

import re
from pathlib import Path

COLUMNS = {  # column -> tests (file::function) whose [family] runs decide it
    "run, cache, patch": ["test_models.py::test_residual_sites_equal_hf_hidden_states",
                          "test_models.py::test_site_internals_are_consistent",
                          "test_interventions.py::test_hooks_are_removed_after_an_error_inside_an_intervention"],
    "attention internals": ["test_models.py::test_cached_patterns_equal_hf_eager_output_attentions"],
    "edge engine": ["test_circuits.py::test_all_kept_is_the_model_and_all_cut_is_the_corrupted_run"],
    "DLA": ["test_lens.py::test_dla_sums_to_the_logit_and_the_logit_difference"],
    "neuron DLA": ["test_lens.py::test_neuron_dla_adds_up_to_the_mlp_contribution"],
    "head circuits from weights": ["test_heads.py::test_weights_reproduce_the_values_every_family"],
    "SAE sites (mlp.in)": ["test_models.py::test_mlp_in_is_what_the_mlp_reads"],
    "experts: sites, routing, senders": [
        "test_models.py::test_expert_sites_add_up_to_the_moe_block_and_can_be_ablated",
        "test_models.py::test_router_site_is_the_router_logits_and_editing_it_reroutes",
        "test_circuits.py::test_experts_send_separately_into_one_moe_receiver"],
}
# column -> (the adapter property that makes a family refuse it, the reason shown); the family's test then
# checks the refusal by name, so a pass there means "refused, as documented"
REFUSALS = {"neuron DLA": (lambda a: a.mlp_down is None, "refused (experts: no single MLP)")}


class Collector:
    """A pytest plugin: records (test, family) -> outcome, writes the table at the end."""

    def __init__(self, readme: Path):
        self.readme, self.outcomes = readme, {}

    def pytest_runtest_logreport(self, report):
        if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
            return
        m = re.match(r"(?:.*/)?(test_\w+\.py)::(\w+)(?:\[(\w+)\])?$", report.nodeid)
        if m:
            self.outcomes[(f"{m.group(1)}::{m.group(2)}", m.group(3))] = report.outcome

    def pytest_sessionfinish(self, session):
        from mechscope.models.tiny import FAMILIES

        head = "| family | " + " | ".join(COLUMNS) + " |"
        rows = [head, "|---|" + "---|" * len(COLUMNS)]
        from mechscope.models.adapters import ADAPTERS
        from mechscope.models.tiny import tiny_config

        for family in FAMILIES:
            adapter = ADAPTERS[tiny_config(family, 320).model_type]
            cells = []
            for column, tests in COLUMNS.items():
                got = [self.outcomes.get((t, family)) for t in tests]
                refuses, reason = REFUSALS.get(column, (lambda a: False, ""))
                if any(g == "failed" for g in got):
                    cells.append("✗")
                elif refuses(adapter):
                    cells.append(reason if got[0] == "passed" else "✗")
                elif got and all(g == "passed" for g in got):
                    cells.append("✓")
                else:
                    cells.append("—")
            rows.append(f"| {family} | " + " | ".join(cells) + " |")
        text = self.readme.read_text()
        start, end = "<!-- families:start -->", "<!-- families:end -->"
        block = start + "\n" + "\n".join(rows) + "\n" + end
        if start in text:
            text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
            self.readme.write_text(text)
