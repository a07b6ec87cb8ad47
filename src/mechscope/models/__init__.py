"""Models: loading, site naming, per-architecture adapters, the attention function, hook lifetime."""

from .adapters import ADAPTERS, UnsupportedArchitecture
from .load import EMBEDDED, load
from .model import Model, ModelConfig
from .sites import SiteError

__all__ = ["ADAPTERS", "EMBEDDED", "Model", "ModelConfig", "SiteError", "UnsupportedArchitecture", "load"]
