"""Run by torchrun in tests/test_distributed.py: join the group, run every analysis that divides its
work, and let rank 0 alone write the results (``python distributed_job.py OUT``)."""

import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_distributed import _analyses  # noqa: E402

from mechscope.distributed import group, rank_world  # noqa: E402

torch.set_num_threads(1)
with group() as device:
    rank, world = rank_world()
    results = _analyses()
    if rank == 0:
        torch.save({"world": world, **results}, Path(sys.argv[1]) / "nodes.pt")
