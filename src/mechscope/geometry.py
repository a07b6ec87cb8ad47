"""Moved to ``mechscope.concepts.geometry`` (this path stays an alias of it)."""

import sys

from .concepts import geometry as _moved

sys.modules[__name__] = _moved
