"""The numbers that reach Caffe: finite and in range before Caffe computes with them.

Caffe does not check its numbers, and a NaN does worse than spoil a result. Max pooling
keeps, for each window, the index of its largest value, starting from -1; a window holding
only NaN (or -inf) keeps -1, and the backward pass then adds into the element just before the
diff array: glibc sees its heap corrupted ("double free or corruption", exit 134). So every
number is checked on its way in:

- the flags, by their ranges (``deepdream_caffe/params.py: LIMITS``);
- the weights, as they are read, before Caffe sees them (``checks.check_weights``), and the
  preprocessed images (:func:`check_input`);
- during a dream, after every forward pass and before its backward pass, the input blob and
  every blob that max pooling reads (:func:`guarded`): ``--no-clip`` with a large step can
  grow the image until the net overflows. The checks only read; no number changes.
"""

from __future__ import annotations

import numpy as np

from .errors import DreamError
from .params import FLT_MAX

V1_POOLING = 17  # LayerParameter.LayerType.POOLING of Caffe's V1 definitions


def max_pool_inputs(model) -> list:
    """Names of the blobs that MAX pooling layers of ``model`` read."""
    layers = model.layer if len(model.layer) else model.layers
    names = []
    for layer in layers:
        if layer.type in ("Pooling", V1_POOLING) and layer.pooling_param.pool == 0:  # MAX
            names.extend(b for b in layer.bottom if b not in names)
    return names


def safe_for_pooling(array) -> bool:
    """No NaN, no -inf, nothing at or below -FLT_MAX: every pooling window finds a maximum."""
    return bool(array.size == 0 or array.min() > -FLT_MAX)


def check_forward(net, blobs, end) -> None:
    """Refuse to run a backward pass after a forward pass that left the float range."""
    data = net.blobs["data"].data
    bad = None if safe_for_pooling(data) and np.isfinite(data.max()) else "data"
    for name in blobs:
        if bad is None and name in net.blobs and not safe_for_pooling(net.blobs[name].data):
            bad = name
    if bad is not None:
        raise DreamError(
            f"the dream left the float range: blob {bad!r} holds NaN or infinity on the way "
            f"to {end!r}, and Caffe's max pooling cannot go on from there",
            "use a smaller --step-size, leave out --no-clip, or check the weights",
        )


def guarded(net, objective, blobs, end):
    """``objective`` preceded by :func:`check_forward`: make_step calls the objective between
    the forward and the backward pass, which is where the check must run."""

    def checked(dst):
        check_forward(net, blobs, end)
        return objective(dst)

    return checked


def check_input(array, what) -> None:
    """Refuse a preprocessed image (mean subtracted) that is not finite or out of range."""
    if array.size == 0 or not np.isfinite(array).all() or np.abs(array).max() > 2 * 255:
        raise DreamError(
            f"{what} holds numbers outside the 0..255 pixel range once the mean is subtracted",
            "check the image and --mean (three values in 0..255)",
        )
