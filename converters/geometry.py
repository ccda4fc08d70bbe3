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


DEFAULT_MAX_ASPECT = 4.0
"""Previews are at most 4:1 (or 1:4): a 20000x1500 panorama gets 1280x320, not 1280x96."""


def aspect_crop(
    width: float, height: float, max_aspect: float = DEFAULT_MAX_ASPECT, *, anchor: str = "center"
) -> tuple[float, float, float, float]:
    """The part of a ``width`` x ``height`` picture a preview shows: (left, top, right, bottom).

    Pictures no longer than ``max_aspect`` times their short side are shown whole. Longer ones
    are cut to exactly ``max_aspect``: around the middle (``anchor="center"``: panoramas,
    banners), or keeping the start (``anchor="start"``: the top of a tall page, the left of a
    wide one, where a document begins). Padding was the alternative; it keeps everything but
    leaves the picture a thin stripe in a grey box, which is what users complained about.
    """
    if max_aspect < 1:
        raise ValueError(f"max_aspect must be at least 1, got {max_aspect}")
    if width >= height:
        keep = min(width, height * max_aspect)
        left = 0.0 if anchor == "start" else (width - keep) / 2
        return left, 0.0, left + keep, float(height)
    keep = min(height, width * max_aspect)
    top = 0.0 if anchor == "start" else (height - keep) / 2
    return 0.0, top, float(width), top + keep
