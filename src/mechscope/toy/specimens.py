"""Moved to ``mechscope.specimens.toy`` (this path stays an alias of it)."""

import sys

from ..specimens import toy as _moved

sys.modules[__name__] = _moved
