"""What a stored figure may be: a page shows every finding's figure, so a small export must not carry
an image that makes a page of hundreds of megabytes (a 256 MiB "PNG" that compresses to 282 KB was
accepted when only the signature was checked). Checked at import and at record."""

from __future__ import annotations

import struct

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FIGURE_BYTES = 16 << 20  # a drawn figure is ~10-500 kB
MAX_FIGURE_PIXELS = 40_000_000  # e.g. 8,000 × 5,000
MAX_SVG_BYTES = 16 << 20
HEAD = 24  # the signature and the IHDR chunk's width and height


def png_problem(head: bytes, size: int) -> str | None:
    """Why a PNG of ``size`` bytes whose first bytes are ``head`` (at least ``HEAD``) cannot be a stored
    figure; None when it can."""
    if head[:8] != PNG_SIGNATURE:
        return "is not a PNG image"
    if len(head) < HEAD or head[12:16] != b"IHDR":
        return "is a PNG without its header (IHDR)"
    width, height = struct.unpack(">II", head[16:24])
    if width == 0 or height == 0 or width * height > MAX_FIGURE_PIXELS:
        return f"is {width} × {height} pixels (a figure is at most {MAX_FIGURE_PIXELS:,} pixels)"
    if size > MAX_FIGURE_BYTES:
        return f"is {size:,} bytes (a figure is at most {MAX_FIGURE_BYTES:,})"
    return None


def svg_problem(head: bytes, size: int) -> str | None:
    """Why an SVG of ``size`` bytes beginning with ``head`` cannot be a stored figure; None when it can."""
    if b"<svg" not in head:
        return "is not an SVG image"
    if size > MAX_SVG_BYTES:
        return f"is {size:,} bytes (a figure is at most {MAX_SVG_BYTES:,})"
    return None
