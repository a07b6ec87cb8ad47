"""mechscope: a workbench for mechanistic interpretability of Hugging Face models.

>>> import mechscope as ms
>>> model = ms.load("smollm2-135m")
>>> run = model.run(["The cat sat on the mat.", "Paris is in"], cache=["blocks.*.attn.pattern"])
"""

from .models import EMBEDDED, Model, ModelConfig, SiteError, UnsupportedArchitecture, load  # first: no cycles
from .models.interventions import Ablate, Add, Intervention, InterventionError, Patch, ProjectOut, Replace, Route
from .models.run import Cache, Run

__version__ = "0.1.0"

__all__ = [
    "Ablate", "Add", "Cache", "EMBEDDED", "Intervention", "InterventionError", "Model", "ModelConfig",
    "Patch", "ProjectOut", "Replace", "Route", "Run", "SiteError", "UnsupportedArchitecture", "load", "__version__",
]

_SUBMODULES = {"archive", "attribution", "circuits", "compile", "components", "concepts", "data", "lenses", "names",
               "report", "results", "sae", "specimens", "tasks", "toy", "tracing", "verify", "vision", "web"}


def __getattr__(name: str):
    """``ms.archive``, ``ms.report``, ... are imported on first use (keeps ``import mechscope`` light)."""
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'mechscope' has no attribute {name!r}")
