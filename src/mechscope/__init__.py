"""mechscope: a workbench for mechanistic interpretability of Hugging Face models.

>>> import mechscope as ms
>>> model = ms.load("smollm2-135m")
>>> run = model.run(["The cat sat on the mat.", "Paris is in"], cache=["blocks.*.attn.pattern"])

Names load on first use (``lazy``): ``import mechscope`` is light until a model is needed.
"""

from .lazy import exports

__version__ = "0.1.0"

_INTERVENTIONS = ("Ablate", "Add", "Intervention", "InterventionError", "Patch", "ProjectOut", "Replace", "Route")
_SUBMODULES = ("archive", "attribution", "circuits", "compile", "components", "concepts", "data", "explain", "lenses",
               "models",
               "names", "report", "results", "sae", "specimens", "tasks", "toy", "tracing", "verify", "vision", "web")
__getattr__, __dir__ = exports(__name__, {
    "EMBEDDED": ".models.embedded:EMBEDDED", "load": ".models.load:load", "Model": ".models.model:Model",
    "ModelConfig": ".models.model:ModelConfig", "SiteError": ".models.sites:SiteError",
    "UnsupportedArchitecture": ".models.adapters:UnsupportedArchitecture",
    "Cache": ".models.run:Cache", "Run": ".models.run:Run",
    **{name: f".models.interventions:{name}" for name in _INTERVENTIONS},
    **{name: f".{name}" for name in _SUBMODULES},
})

__all__ = [
    "Ablate", "Add", "Cache", "EMBEDDED", "Intervention", "InterventionError", "Model", "ModelConfig",
    "Patch", "ProjectOut", "Replace", "Route", "Run", "SiteError", "UnsupportedArchitecture", "load", "__version__",
]
