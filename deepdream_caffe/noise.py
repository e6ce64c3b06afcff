"""Dreams from noise: ``noise:WIDTHxHEIGHT`` wherever a command takes an input image.

The noise is the start image of Google's own DeepDream tutorial (the TensorFlow notebook by the
notebook's author): ``np.random.uniform(size=(H, W, 3)) + 100.0``. It is drawn from the run's
seeded generator, first: ``RandomState(seed)`` draws the input's noise, then the guide's (for
``guide``), and the same generator goes on to draw the dream's jitter (or draw's crops). So
``--seed S`` on ``noise:WxH`` is the notebook's run after ``np.random.seed(S)`` with the noise
made just before it, and an image file draws nothing: real inputs give the bits they gave
before. The same seed gives the same noise and the same dream; the sidecar records the size and
the recipe instead of a file.

A real file whose name starts with ``noise:`` must be given with its folder (``/path/noise:...``).
"""

from __future__ import annotations

import re

import numpy as np

from .errors import DreamError

PREFIX = "noise:"
RECIPE = "numpy.random.RandomState(seed).uniform(size=(H, W, 3)) + 100.0, drawn before the jitter"
MAX_SIDE = 2**16  # pixels; the memory check refuses what does not fit long before
SPEC = re.compile(r"noise:([0-9]{1,12})x([0-9]{1,12})")  # ASCII digits only


def is_noise(path) -> bool:
    """True for a ``noise:...`` input (well formed or not: :func:`size` says what is wrong)."""
    return path is not None and str(path).startswith(PREFIX)


def size(path) -> tuple[int, int]:
    """(H, W) of a ``noise:WIDTHxHEIGHT`` input, checked."""
    text = str(path)
    match = SPEC.fullmatch(text)
    if not match:
        raise DreamError(
            f"{text!r} is not noise:WIDTHxHEIGHT",
            "give e.g. noise:1024x575 (or a file whose name starts with noise: with its folder)",
        )
    w, h = int(match.group(1)), int(match.group(2))
    if w < 1 or h < 1:
        raise DreamError(
            f"{text}: the noise must be at least 1x1 pixels", "give e.g. noise:1024x575"
        )
    if max(w, h) > MAX_SIDE:
        raise DreamError(
            f"{text}: a side of more than {MAX_SIDE} pixels is too large",
            "give a smaller size, e.g. noise:1024x575",
        )
    return h, w


def image(path, rng) -> np.ndarray:
    """The noise, drawn from ``rng`` (a seeded ``np.random.RandomState``): float64, H x W x 3
    on the 0..255 scale (100..101), as the tutorial made it."""
    h, w = size(path)
    return rng.uniform(size=(h, w, 3)) + 100.0


def record(path) -> dict:
    """What the sidecar says of a noise input, in place of a file's path and hash."""
    h, w = size(path)
    return {"noise": f"{w}x{h}", "recipe": RECIPE}
