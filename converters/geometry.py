"""Picture sizes shared by the converters that make previews (not a converter itself)."""

from __future__ import annotations


def fit_long_side(width: float, height: float, long_side: int, *, enlarge: bool = False) -> tuple[int, int]:
    """(w, h) whose long side is ``long_side`` and whose short side keeps the aspect ratio.

    Pixel sources are never enlarged (``enlarge=False`` returns their own size when it already
    fits); vector sources (PDF pages, drawings) are drawn at any size (``enlarge=True``).
    """
    if not enlarge and max(width, height) <= long_side:
        return int(width), int(height)
    if width >= height:
        return long_side, max(1, round(height * long_side / width))
    return max(1, round(width * long_side / height)), long_side
