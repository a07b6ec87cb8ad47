"""Moved to ``mechscope.concepts.steering`` (this path stays an alias of it)."""

import sys

from .concepts import steering as _moved

sys.modules[__name__] = _moved
