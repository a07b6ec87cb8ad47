"""Test set-up: one torch thread per worker, tiny models per family, SmolLM2 for `slow` tests."""

import os
import tempfile

import pytest
import torch

os.environ.setdefault("MECHSCOPE_ARCHIVE", os.path.join(tempfile.mkdtemp(), "archive"))  # never a user's archive
os.environ.setdefault("MECHSCOPE_PAGES", os.path.join(tempfile.mkdtemp(), "pages"))  # nor their pages folder

# Parallel workers must not fight over OpenMP threads: one each. MECHSCOPE_TEST_THREADS changes it, to check
# that no test rides on one thread count's float summation order (`make robustness`).
torch.set_num_threads(int(os.environ.get("MECHSCOPE_TEST_THREADS", "1")))
os.environ["MECHSCOPE_THREADS"] = str(torch.get_num_threads())  # what a command run in a test then uses

from mechscope.models.attention import active_probes  # noqa: E402
from mechscope.models.tiny import FAMILIES, tiny  # noqa: E402


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="also run tests on the real embedded models")
    parser.addoption("--family-table", metavar="PAGE", help="write the families × capabilities table into PAGE (docs/models.md)")


def pytest_configure(config):
    readme = config.getoption("--family-table", None)
    if readme and not hasattr(config, "workerinput"):  # the controller collects every worker's reports
        from family_table import Collector

        config.pluginmanager.register(Collector(__import__("pathlib").Path(readme)), "family-table")


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


@pytest.fixture(params=["sqlite", "postgresql"])
def new_archive(request, tmp_path):
    """A factory of fresh, empty archives of one backend: SQLite directories, or (when
    $MECHSCOPE_TEST_PG is set) new PostgreSQL databases created for this test and dropped after."""
    import uuid

    import mechscope.archive

    opened, databases = [], []
    base = os.environ.get("MECHSCOPE_TEST_PG")
    if request.param == "postgresql" and not base:
        pytest.skip("PostgreSQL: set MECHSCOPE_TEST_PG=postgresql+psycopg://user@host:port/db (.ci/run does)")
    if base:
        from sqlalchemy import create_engine, text

        admin = create_engine(base, isolation_level="AUTOCOMMIT")

    def make():
        tag = uuid.uuid4().hex[:12]
        if request.param == "sqlite":
            arch = mechscope.archive.open(tmp_path / f"archive-{tag}")
        else:
            name = f"ms_test_{tag}"
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {name}"))
            databases.append(name)
            arch = mechscope.archive.open(base.rsplit("/", 1)[0] + "/" + name, files=tmp_path / f"files-{tag}")
        opened.append(arch)
        return arch

    yield make
    for arch in opened:
        arch.close()
    if databases:
        with admin.connect() as conn:
            for name in databases:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


@pytest.fixture
def archive(new_archive):
    return new_archive()
