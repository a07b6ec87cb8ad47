"""Moved to ``mechscope.concepts.probes`` (this path stays an alias of it)."""

import sys

from .concepts import probes as _moved

sys.modules[__name__] = _moved
