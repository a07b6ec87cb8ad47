"""Models: loading, site naming, per-architecture adapters, the attention function, hook lifetime.
Names load on first use (``mechscope.lazy``), so the embedded models' names cost no torch import."""

from ..lazy import exports

__getattr__, __dir__ = exports(__name__, {
    "ADAPTERS": ".adapters:ADAPTERS", "UnsupportedArchitecture": ".adapters:UnsupportedArchitecture",
    "EMBEDDED": ".embedded:EMBEDDED", "load": ".load:load", "Model": ".model:Model", "ModelConfig": ".model:ModelConfig",
    "SiteError": ".sites:SiteError",
})

__all__ = ["ADAPTERS", "EMBEDDED", "Model", "ModelConfig", "SiteError", "UnsupportedArchitecture", "load"]
