"""Moved to ``mechscope.models.interventions`` (this path stays an alias of it)."""

import sys

from .models import interventions as _moved

sys.modules[__name__] = _moved
