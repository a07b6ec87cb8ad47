"""Moved to ``mechscope.specimens.vision`` (this path stays an alias of it)."""

import sys

from ..specimens import vision as _moved

sys.modules[__name__] = _moved
