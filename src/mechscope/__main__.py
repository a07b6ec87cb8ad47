"""`python -m mechscope ...` (also what `torchrun -m mechscope sae train ...` runs on every rank)."""

import sys

from .cli import main

sys.exit(main())
