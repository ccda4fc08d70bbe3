"""Option parsing shared by the converters (not a converter itself).

Converters receive a plain ``options`` mapping; these helpers read one option, fall back to a
default when it is absent (``None``) and raise :class:`ValueError` with a message naming the
option when a value is present but unusable.
"""

from __future__ import annotations

from typing import Any, Mapping

DEFAULT_PREVIEW_SIZES = (160, 480, 1280)
"""Long side in pixels of each ``preview-<size>.jpg`` when ``preview_sizes`` is not given."""

MAX_PREVIEW_SIZE = 8192


def _number(options, key, default, minimum, maximum, kind, noun):
    value = options.get(key)
    if value is None:
        return default
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {key!r} must be {noun}, got {value!r}") from None
    if maximum is not None:
        if not minimum <= number <= maximum:
            raise ValueError(f"option {key!r} must lie between {minimum} and {maximum}, got {number}")
    elif number < minimum:
        raise ValueError(f"option {key!r} must be at least {minimum}, got {number}")
    return number


def int_option(
    options: Mapping[str, Any], key: str, default: int, minimum: int, maximum: int | None = None
) -> int:
    """``options[key]`` as an int, or ``default`` when absent.

    ``minimum`` has no default on purpose: callers differ (0 for counts that may be zero, 1 for
    sizes and limits, more for some) and must say which they mean. ``maximum`` is optional.
    ``default`` itself is not checked.
    """
    return _number(options, key, default, minimum, maximum, int, "an integer")


def float_option(
    options: Mapping[str, Any], key: str, default: float, minimum: float, maximum: float | None = None
) -> float:
    """``options[key]`` as a float, or ``default`` when absent; bounds as in :func:`int_option`."""
    return _number(options, key, default, minimum, maximum, float, "a number")


def preview_sizes(
    options: Mapping[str, Any], *, accept_single: bool, default: tuple[int, ...] = DEFAULT_PREVIEW_SIZES
) -> list[int]:
    """The ``preview_sizes`` option: distinct ints, largest first, each in 1..8192.

    Accepts a list of numbers or a string such as ``"160,480"`` (``;`` also separates). With
    ``accept_single`` a lone number counts as a one-size list; without it a lone number is
    rejected. An empty list or string gives ``[]``; callers that need a size check that.
    When the option is absent, ``default`` is returned, also largest first.
    """
    value = options.get("preview_sizes")
    if value is None:
        value = default
    if accept_single and isinstance(value, (int, float)):
        value = [value]
    if isinstance(value, str):
        value = [part for part in value.replace(";", ",").split(",") if part.strip()]
    try:
        sizes = sorted({int(v) for v in value}, reverse=True)
    except (TypeError, ValueError):
        raise ValueError(f"option 'preview_sizes' must be a list of integers, got {value!r}") from None
    if any(s < 1 or s > MAX_PREVIEW_SIZE for s in sizes):
        raise ValueError(f"preview sizes must lie between 1 and {MAX_PREVIEW_SIZE} pixels, got {sizes}")
    return sizes


def max_aspect(options: Mapping[str, Any]) -> float:
    """The ``preview_max_aspect`` option: how much longer than wide (or wider than long) a preview
    may be, at least 1; default :data:`converters.geometry.DEFAULT_MAX_ASPECT` (4)."""
    from converters.geometry import DEFAULT_MAX_ASPECT

    return float_option(options, "preview_max_aspect", DEFAULT_MAX_ASPECT, minimum=1.0, maximum=1000.0)
