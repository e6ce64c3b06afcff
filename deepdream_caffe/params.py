"""Every default in one place: the notebook's (dream.ipynb cells 6, 8, 19, 25).

tests/test_params.py pins these to the notebook's own source.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
