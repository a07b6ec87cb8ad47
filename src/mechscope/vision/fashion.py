"""Fashion-MNIST (Debian's ``dataset-fashion-mnist``) and a small CNN trained on it here.

``fashion_mnist(split)`` reads the IDX files from ``/usr/share/datasets/fashion-mnist`` (or
``$MECHSCOPE_FASHION_MNIST``): images [n, 1, 28, 28] in [0, 1] and labels [n]. ``fashion_cnn()``
trains a two-convolution network on them (seeded, CPU, about a minute for the full training set)
and returns it as an ``ImageModel`` whose sites are ``conv1``, ``act1``, ``pool1``, ``conv2``,
``act2``, ``pool2``, ``flatten``, ``fc``, with its held-out accuracy.
"""

from __future__ import annotations

import gzip
import os
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from .model import ImageModel

CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
MEAN, STD = 0.2860, 0.3530  # the training images' pixel mean and standard deviation


def fashion_dir() -> Path:
    d = Path(os.environ.get("MECHSCOPE_FASHION_MNIST", "/usr/share/datasets/fashion-mnist"))
    if not (d / "train-images-idx3-ubyte.gz").exists():
        raise FileNotFoundError(f"Fashion-MNIST is not in {d}: install Debian's package (apt-get install "
                                "dataset-fashion-mnist; `make test` does when it can) or set MECHSCOPE_FASHION_MNIST")
    return d


def _idx(path: Path) -> torch.Tensor:
    raw = gzip.decompress(path.read_bytes())
    if raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(raw[3])]
    data = torch.frombuffer(bytearray(raw[4 + 4 * len(dims):]), dtype=torch.uint8)
    if data.numel() != torch.Size(dims).numel():
        raise ValueError(f"{path}: {data.numel()} bytes for dimensions {dims}")
    return data.view(*dims)


def fashion_mnist(split: str = "train", n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [n, 1, 28, 28] in [0, 1], labels [n]) of the ``train`` (60k) or ``test`` (10k) split."""
    if split not in ("train", "test"):
        raise ValueError(f"split={split!r}; valid: 'train', 'test'")
    d = fashion_dir()
    prefix = "train" if split == "train" else "t10k"
    images = _idx(d / f"{prefix}-images-idx3-ubyte.gz")[:n]
    labels = _idx(d / f"{prefix}-labels-idx1-ubyte.gz")[:n]
    return images[:, None].float() / 255.0, labels.long()


def fashion_cnn(*, epochs: int = 1, n_train: int | None = None, batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
                progress: bool = True) -> tuple[ImageModel, float]:
    """(the trained CNN as an ImageModel, its accuracy on the 10k test images)."""
    torch.manual_seed(seed)
    net = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 16, 3, padding=1)), ("act1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("act2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc", nn.Linear(32 * 7 * 7, 10))]))
    x, y = fashion_mnist("train", n_train)
    x = (x - MEAN) / STD
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    steps = epochs * (len(x) // batch_size)
    bar = tqdm(total=steps, desc="training the Fashion-MNIST CNN", disable=not progress, leave=False)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch_size + 1, batch_size):
            idx = perm[i:i + batch_size]
            loss = nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            bar.update(1)
    bar.close()
    net.eval()
    xt, yt = fashion_mnist("test")
    with torch.no_grad():
        acc = float((net((xt - MEAN) / STD).argmax(-1) == yt).float().mean())
    return ImageModel(net, CLASSES, name="fashion-cnn", size=28, mean=[MEAN], std=[STD]), acc
