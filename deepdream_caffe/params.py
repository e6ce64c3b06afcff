"""Every default in one place: the notebook's (dream.ipynb cells 6, 8, 19, 25), and beside
them the one table of every number's range (:data:`LIMITS`), which the CLI's flags, a job,
``reproduce`` (reading a sidecar) and ``sweep`` all check against.

tests/test_params.py pins the defaults to the notebook's own source.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class DreamParams:
    end: str = "inception_4c/output"  # deepdream(end=...), cell 8
    iter_n: int = 10  # gradient steps per octave
    octave_n: int = 4  # number of scales
    octave_scale: float = 1.4  # size ratio between octaves
    step_size: float = 1.5  # make_step(step_size=...), cell 6
    jitter: int = 32  # largest random shift, pixels
    clip: bool = True  # keep pixels inside 0..255 after each step

    def as_kwargs(self) -> dict:
        """Keyword arguments for :func:`deepdream_caffe.dream.deepdream`."""
        return asdict(self)


DEFAULTS = DreamParams()
GUIDE_END = "inception_3b/output"  # cell 25
ZOOM_FRAMES = 100  # cell 19: for i in xrange(100)
ZOOM_SCALE = 0.05  # cell 19: s = 0.05

# --- the limits: the range of every number a run takes ------------------------------------
COUNT_MAX = 2**31 - 1  # the largest count numpy's and Caffe's 32-bit integers take
FLT_MAX = float(np.finfo(np.float32).max)  # the largest number a float32 blob holds

# name: (low, high, low included, high included). The CLI parses its flags with these,
# check_number holds a job to them, and a sidecar read back is checked against them.
LIMITS = {
    "iter_n": (1, COUNT_MAX, True, True),
    "octave_n": (1, COUNT_MAX, True, True),
    "octave_scale": (1, FLT_MAX, False, True),
    "step_size": (0, FLT_MAX, False, True),
    "jitter": (0, COUNT_MAX, True, True),
    "seed": (0, 2**32 - 1, True, True),  # what np.random.RandomState takes
    "max_size": (16, COUNT_MAX, True, True),
    "jpeg_quality": (1, 95, True, True),  # Pillow: above 95 only grows the file
    "frames": (1, COUNT_MAX, True, True),
    "scale": (0, 1, False, False),  # zoom's crop per frame: below 1, or nothing is left
    "gpu": (0, COUNT_MAX, True, True),
    "mean": (0, 255, True, True),  # each of B, G, R: a mean of 0..255 pixels
    "seeds": (2, COUNT_MAX, True, True),  # verify-notebook: the spread needs two
    "threads": (1, COUNT_MAX, True, True),  # OpenBLAS threads
    "repeats": (1, COUNT_MAX, True, True),  # bench: runs of each variant
    "fps": (0, FLT_MAX, False, True),  # frames per second of zoom --video
    "tile": (64, COUNT_MAX, True, True),  # --tile: below 64 pixels tiles are mostly border
    "blend": (0, 1, True, True),  # video --blend: the next raw frame's weight
    "tolerance": (0, FLT_MAX, True, True),  # a golden bundle's relative L2 tolerance
}


def in_range(name: str, value) -> bool:
    low, high, low_in, high_in = LIMITS[name]
    return (low < value or (low_in and value == low)) and (
        value < high or (high_in and value == high)
    )


def range_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` for ``LIMITS[name]`` in words, or None if it is in range."""
    if in_range(name, value):
        return None
    low, high, low_in, high_in = LIMITS[name]
    if high not in (COUNT_MAX, FLT_MAX):  # a range with a meaningful top: both ends
        ends = f"{'[' if low_in else '('}{low}, {high}{']' if high_in else ')'}"
        return (
            f"must be in {ends}"
            if isinstance(low, float) or not (low_in and high_in)
            else f"must be in {low}..{high}"
        )
    if value > high:
        return f"must be at most {high:g}" if isinstance(high, float) else f"must be at most {high}"
    if not low_in:
        return f"must be greater than {low}"
    return "must not be negative" if low == 0 else f"must be at least {low}"


def check_problem(name: str, value) -> str | None:
    """What is wrong with ``value`` as the number ``name``: its type, finiteness or range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "must be a number"
    try:
        if not math.isfinite(value):
            return "must be finite"
    except OverflowError:  # an integer too large for a float is out of every range
        pass
    return range_problem(name, value)
