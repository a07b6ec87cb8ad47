"""Test set-up: one torch thread per worker, tiny models per family, SmolLM2 for `slow` tests."""

import os

import pytest
import torch

torch.set_num_threads(1)  # parallel workers must not fight over OpenMP threads (see DEVELOPERS.md)

from mechscope.models.attention import active_probes  # noqa: E402
from mechscope.models.tiny import FAMILIES, tiny  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests on the real embedded models")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or os.environ.get("MECHSCOPE_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow (make test does)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=FAMILIES)
def model(request):
    return tiny(request.param)


@pytest.fixture
def llama():
    return tiny("llama")


@pytest.fixture(scope="session")
def smollm():
    import mechscope as ms

    return ms.load("smollm2-135m")


def assert_no_hooks(model):
    """No mechscope forward hook or pre-hook remains on any module, no attention probe is installed,
    and the attention implementation is the model's own. (HF installs output-capturing hooks of its
    own when asked for output_attentions; those are not ours and stay.)"""
    for name, module in model.hf.named_modules():
        for hook in [*module._forward_hooks.values(), *module._forward_pre_hooks.values()]:
            assert not getattr(hook, "__module__", "").startswith("mechscope"), f"hook {hook} left on {name!r}"
    assert active_probes() == 0
    assert model.hf.config._attn_implementation != "mechscope"


PROMPTS = ["The cat sat on the mat.", "Paris is in", "When Mary and John went to the store"]
