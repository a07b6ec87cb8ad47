"""The files of an online transcoder training run (``online.train_transcoders``), in one place:

    DIR/progress.json                  {"spec": the run's settings, "step": the last complete checkpoint}
    DIR/layer_L/checkpoint-<step>.pt   layer L's trainer state at that step (``trainer.save_checkpoint``)
    DIR/layer_L/                       layer L's finished dictionary (``SparseCoder.save``), at the end

Each step's checkpoints are written first, then ``progress.json`` names the step (atomically), then
older checkpoints are removed: an interrupted run always has one complete step to resume from.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from .config import SAEError

PROGRESS = "progress.json"


def layer_dir(directory: Path, layer: int) -> Path:
    return directory / f"layer_{layer}"


def checkpoint_path(directory: Path, layer: int, step: int) -> Path:
    return layer_dir(directory, layer) / f"checkpoint-{step}.pt"


def is_run(directory: Path) -> bool:
    """True when ``directory`` holds a training run (its progress file)."""
    return (directory / PROGRESS).is_file()


def read_progress(directory: Path) -> dict | None:
    """``{"spec": ..., "step": ...}`` of the run in ``directory``; None where no run has started."""
    path = directory / PROGRESS
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SAEError(f"{path} cannot be read ({err}); delete {directory} to start afresh") from None


def write_progress(directory: Path, spec: dict, step: int) -> None:
    """Name ``step`` the run's last complete checkpoint (atomically)."""
    tmp = directory / f".{PROGRESS}.tmp"
    tmp.write_text(json.dumps({"spec": spec, "step": step}))
    os.replace(tmp, directory / PROGRESS)


def remove_older(directory: Path, layers, step: int) -> None:
    """Delete every layer's checkpoints but ``step``'s (once ``progress.json`` names it)."""
    for layer in layers:
        for old in layer_dir(directory, layer).glob("checkpoint-*.pt"):
            if old.name != checkpoint_path(directory, layer, step).name:
                old.unlink(missing_ok=True)
