"""Images in and out: scikit-image's bundled photos, files, and the model's input size.

Images are float tensors [3, H, W] in [0, 1]; ``prepare`` resizes the short side to the model's
size and centre-crops a square (antialiased bilinear), or resizes the whole image, giving
[1, 3, size, size].
"""

from __future__ import annotations

import os

import torch

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "cat", "camera", "horse")


def photo(name: str) -> torch.Tensor:
    """A photo bundled with scikit-image (``chelsea`` / ``cat``: a tabby cat; ``coffee``, ``astronaut``,
    ``rocket``, ...): [3, H, W] in [0, 1]."""
    import skimage.data

    if name not in PHOTOS:
        raise ValueError(f"unknown photo {name!r}; bundled: {', '.join(PHOTOS)}")
    img = torch.as_tensor(getattr(skimage.data, name)())
    if img.dim() == 2:
        img = img[..., None].expand(-1, -1, 3)
    return img[..., :3].permute(2, 0, 1).float() / 255.0


def read_image(path_or_photo: str | os.PathLike) -> torch.Tensor:
    """A bundled photo by name, or an image file (PNG, JPEG, ...): [3, H, W] in [0, 1]."""
    if str(path_or_photo) in PHOTOS:
        return photo(str(path_or_photo))
    if not os.path.exists(path_or_photo):
        raise FileNotFoundError(f"no image file {path_or_photo!r} (bundled photos: {', '.join(PHOTOS)})")
    from PIL import Image, UnidentifiedImageError

    Image.MAX_IMAGE_PIXELS = 100_000_000  # a decompression bomb is refused, not allocated
    try:
        with Image.open(path_or_photo) as im:
            img = torch.as_tensor(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8)
            return img.view(im.height, im.width, 3).permute(2, 0, 1).float() / 255.0
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as e:
        raise ValueError(f"{path_or_photo!r} is not an image file PIL can read (PNG, JPEG, ...): "
                         f"{str(e).splitlines()[0]}") from None


def prepare(image: torch.Tensor, size: int, crop: bool = True) -> torch.Tensor:
    """[3, H, W] → [1, 3, size, size]: short side resized to ``size`` and a centre crop, or
    (``crop=False``) the whole image resized to size × size (aspect not kept)."""
    if image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(f"an image is [3, H, W]; got {tuple(image.shape)}")
    if not crop:
        return torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True,
                                               align_corners=False).clamp(0, 1)
    h, w = image.shape[1:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = torch.nn.functional.interpolate(image[None], size=(nh, nw), mode="bilinear", antialias=True,
                                        align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    return x[..., top:top + size, left:left + size].clamp(0, 1)
