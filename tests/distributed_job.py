"""Run by torchrun in tests/test_distributed.py: join the group, run every analysis that divides its
work, and let rank 0 alone write the results (``python distributed_job.py OUT``).

``--records DIR --die-after K``: keep progress records in DIR; on torchrun's first attempt rank 1
exits abruptly after writing K records. Each attempt writes OUT/computed-ATTEMPT how many chunks
its ranks computed (rather than loaded)."""

import argparse
import os
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from test_distributed import _analyses  # noqa: E402

from mechscope import distributed  # noqa: E402
from mechscope.distributed import group, rank_world, records, total  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("out", type=Path)
parser.add_argument("--records", type=Path)
parser.add_argument("--die-after", type=int)
args = parser.parse_args()

torch.set_num_threads(1)
attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
computed = [0]
save = distributed._save_record


def counting_save(path, value):
    save(path, value)
    computed[0] += 1
    if args.die_after and attempt == 0 and rank_world()[0] == 1 and computed[0] == args.die_after:
        os._exit(1)  # killed: no cleanup, no goodbye to the group


distributed._save_record = counting_save
with group() as device:
    rank, world = rank_world()
    with records(args.records) if args.records else nullcontext():
        results = _analyses()
    n = int(total(torch.tensor(computed[0])))
    if rank == 0:
        torch.save({"world": world, **results}, args.out / "nodes.pt")
        if args.records:
            (args.out / f"computed-{attempt}").write_text(str(n))
