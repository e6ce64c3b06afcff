"""The algorithm of google/deepdream ``dream.ipynb``, line for line, in Python 3.

Hold each function beside its notebook cell: preprocess/deprocess (cell 3), objective_L2 and
make_step (cell 6), deepdream (cell 8), the zoom loop (cell 19), guide features (cell 25) and
objective_guide (cell 27). Names, argument names, defaults and the order of operations are
the notebook's. What differs, and why no number changes, is listed in docs/deviations.md:
the jitter comes from an explicit ``rng`` (``np.random.RandomState(S)`` draws exactly what
the notebook drew after ``np.random.seed(S)``), display is a ``callback``, each octave starts
from fresh blob diffs, and a zero or non-finite step stops with an error. make_step's numpy
lines make fewer new arrays than the notebook's (a copy for the jitter roll, one scratch image
for |g|, the step and the unshift, the clip in place), and the octaves are zoomed plane by
plane: the same operations in the same order on the same float32 layout, so the same bits
(tests/test_step_numpy.py).

No files, no network, no argument parsing here: arrays in, arrays out, state in the net.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage as nd

from .errors import DreamError


# cell 3, with the notebook's [::-1] (RGB to BGR) read from the net: its channel_swap
# (2,1,0 for the reference nets, the same channels as [::-1]; 0,1,2 for nets trained on RGB)
def preprocess(net, img):
    return np.float32(np.rollaxis(img, 2)[swap(net)]) - net.transformer.mean['data']


def deprocess(net, img):
    return np.dstack((img + net.transformer.mean['data'])[np.argsort(swap(net))])


def swap(net):
    """The net's input channels as indices into R,G,B (the Classifier's ``channel_swap``)."""
    return list(net.transformer.channel_swap['data'])


# cell 6
def objective_L2(dst):  # noqa: N802 (the notebook's name)
    dst.diff[:] = dst.data


def make_step(net, step_size=1.5, end='inception_4c/output',
              jitter=32, clip=True, objective=objective_L2, rng=np.random, gradient=None):
    '''Basic gradient ascent step.'''

    src = net.blobs['data']  # input image is stored in Net's 'data' blob
    dst = net.blobs[end]

    ox, oy = rng.randint(-jitter, jitter+1, 2)
    # src.data[0] = np.roll(np.roll(src.data[0], ox, -1), oy, -2)
    roll(src.data[0], ox, oy)  # apply jitter shift

    if gradient is None:
        net.forward(end=end)
        objective(dst)  # specify the optimization objective
        net.backward(start=end)
        g = src.diff[0]
    else:  # --tile: the same gradient, tile by tile (deepdream_caffe/tile.py)
        g = gradient(net, end, objective)
    # room for |g|, the step and the unshift, made here: no image is held during the passes
    scratch = np.empty_like(src.data[0])
    g_mean = mean_abs(g, scratch)  # np.abs(g).mean(), which the notebook computes inline
    check_step(g_mean, step_size, end)
    # apply normalized ascent step to the input image
    # src.data[:] += step_size/np.abs(g).mean() * g
    ascend(src.data, step_size/g_mean, g, scratch)

    # src.data[0] = np.roll(np.roll(src.data[0], -ox, -1), -oy, -2)
    roll(src.data[0], -ox, -oy, scratch)  # unshift image

    if clip:
        bias = net.transformer.mean['data']
        # src.data[:] = np.clip(src.data, -bias, 255-bias), in place
        data = src.data
        np.clip(data, -bias, 255-bias, out=data)


# make_step's numpy lines with fewer temporary images, each the same numbers, bit for bit
# (tests/test_step_numpy.py runs them beside the notebook's lines; docs/performance.md)
def roll(img, ox, oy, before=None):
    """``img[:] = np.roll(np.roll(img, ox, -1), oy, -2)`` from one copy of ``img`` (into
    ``before`` if given): the same permutation of the same values, in four block copies."""
    if before is None:
        before = img.copy()
    else:
        before[...] = img
    h, w = img.shape[-2:]
    oy, ox = oy % h, ox % w  # np.roll's shifts, taken modulo the axis as np.roll takes them
    for to_y, from_y in ((slice(oy, h), slice(0, h-oy)), (slice(0, oy), slice(h-oy, h))):
        for to_x, from_x in ((slice(ox, w), slice(0, w-ox)), (slice(0, ox), slice(w-ox, w))):
            img[..., to_y, to_x] = before[..., from_y, from_x]


def mean_abs(g, scratch):
    """``np.abs(g).mean()``, with ``|g|`` written into ``scratch``: the same pairwise float32
    sum over the same C-contiguous layout. Any other ``g`` takes the notebook's expression."""
    if g.dtype != scratch.dtype or g.shape != scratch.shape or not g.flags.c_contiguous:
        return np.abs(g).mean()
    return np.abs(g, out=scratch).mean()


def ascend(data, scale, g, scratch):
    """``data[:] += scale * g``: the product into ``scratch``, then the sum in place.

    Only where ``scale * g`` is float32 of scratch's shape (the notebook's float step_size
    over a float32 mean: numpy keeps float32); any other scale, such as a float64 step_size
    (NEP 50 makes that product float64), takes the notebook's expression."""
    if np.result_type(scale, g) != scratch.dtype or g.shape != scratch.shape:
        data[:] += scale * g
    else:
        np.add(data, np.multiply(scale, g, out=scratch), out=data)


def zoom(img, factors):
    """``nd.zoom(img, factors, order=1)``, plane by plane where ``img`` is a finite float32
    (C, H, W) image and ``factors[0]`` is 1: in less than half the time, the same bits.

    The notebook's call interpolates along the channels too, at whole coordinates: each value
    is the plane's own four terms, in the plane's order, and four more weighted by exactly 0,
    which leave a sum begun at +0.0 as it was (tests/test_step_numpy.py). Anything else, such
    as an infinity, which a zero weight turns into NaN, takes the notebook's call."""
    if (img.ndim != 3 or img.dtype != np.float32 or factors[0] != 1
            or not np.isfinite(img).all()):
        return nd.zoom(img, factors, order=1)
    return np.stack([nd.zoom(plane, factors[1:], order=1) for plane in img])


def check_step(g_mean, step_size, end):
    """Stop before a step that would write NaN or infinity into the image."""
    if g_mean == 0 or not np.isfinite(g_mean) or not np.isfinite(step_size/g_mean):
        raise DreamError(
            f"the gradient at layer {end!r} is {'zero' if g_mean == 0 else 'not finite'} "
            f"(mean |g| = {g_mean}), so the normalised step is undefined",
            "choose another --end layer, or check the weights")


# cell 8
def deepdream(net, base_img, iter_n=10, octave_n=4, octave_scale=1.4,
              end='inception_4c/output', clip=True, callback=None, **step_params):
    """Dream on ``base_img`` (H x W x 3, RGB, float); return the result as float32.

    ``callback(octave, i, net)``, if given, runs after every step, where the notebook
    displayed the image. ``step_params`` go to :func:`make_step` (step_size, jitter,
    objective, rng).
    """
    # prepare base images for all octaves
    octaves = [preprocess(net, base_img)]
    for i in range(octave_n-1):  # noqa: B007 (the notebook's loop)
        octaves.append(zoom(octaves[-1], (1, 1.0/octave_scale, 1.0/octave_scale)))

    src = net.blobs['data']
    detail = np.zeros_like(octaves[-1])  # allocate image for network-produced details
    for octave, octave_base in enumerate(octaves[::-1]):
        h, w = octave_base.shape[-2:]
        if octave > 0:
            # upscale details from the previous octave
            h1, w1 = detail.shape[-2:]
            detail = zoom(detail, (1, 1.0*h/h1, 1.0*w/w1))

        src.reshape(1, 3, h, w)  # resize the network's input image size
        src.data[0] = octave_base+detail
        fresh_diffs(net, end)
        for i in range(iter_n):
            make_step(net, end=end, clip=clip, **step_params)
            if callback is not None:
                callback(octave, i, net)

        # extract details produced on the current octave
        detail = src.data[0]-octave_base
    # returning the resulting image
    return deprocess(net, src.data[0])


def fresh_diffs(net, end):
    """Give every diff the backward pass will not rewrite the value of a fresh net: zero.

    Caffe never clears diffs. In a net pruned to ``end`` (``load_net``'s default) every layer
    is an ancestor of ``end``, so each backward pass rewrites every diff it reads and nothing
    is needed. In a net with layers after ``end`` (the notebook's net, ``--notebook-net``),
    the Split branches leading to them keep whatever an earlier dream with a deeper end left
    there, and Split sums them into the gradient. There a forward pass (the notebook's own
    ``forward(end=end)``, which reshapes nothing the notebook's steps do not) sizes every blob
    up to ``end`` for this octave, and all diffs are zeroed, which is the state of a net
    fresh from disk (docs/deviations.md).
    """
    names = list(net._layer_names)
    if names.index(end) == len(names) - 1:
        return
    net.forward(end=end)
    for blob in net.blobs.values():
        blob.diff[...] = 0


def visible(net, clip=True):
    """The image as the notebook displayed it after each step (cell 8's visualization)."""
    vis = deprocess(net, net.blobs['data'].data[0])
    if not clip:  # adjust image contrast if clipping is disabled
        vis = stretch(vis)
    return vis


def stretch(vis):
    """The notebook's contrast adjustment for images dreamt without clipping."""
    return vis*(255.0/np.percentile(vis, 99.98))


# cell 19
def zoom_frames(net, frame, frames=100, s=0.05, **dream_params):
    """Yield ``(i, frame)`` for the notebook's zoom loop: dream, then zoom in by ``s``.

    Each yielded frame is the float32 dream; the notebook saved ``np.uint8(frame)``.
    """
    h, w = frame.shape[:2]
    for i in range(frames):
        frame = deepdream(net, frame, **dream_params)
        yield i, frame
        frame = nd.affine_transform(frame, [1-s, 1-s, 1], [h*s/2, w*s/2, 0], order=1)


# cell 25
def guide_features(net, guide, end='inception_3b/output'):
    """The activations of ``end`` for the guide image (a copy)."""
    h, w = guide.shape[:2]
    src, dst = net.blobs['data'], net.blobs[end]
    src.reshape(1, 3, h, w)
    src.data[0] = preprocess(net, guide)
    net.forward(end=end)
    return dst.data[0].copy()


# cell 27, with the global guide_features made a closure
def objective_guide(guide_features):
    """Return the notebook's guided objective for the given guide features."""
    def objective(dst):
        x = dst.data[0].copy()
        y = guide_features
        ch = x.shape[0]
        x = x.reshape(ch, -1)
        y = y.reshape(ch, -1)
        A = x.T.dot(y)  # compute the matrix of dot-products with guide features  # noqa: N806
        dst.diff[0].reshape(ch, -1)[:] = y[:, A.argmax(1)]  # select ones that match best
    return objective


def to_uint8(img):
    """The 8-bit image the notebook showed and saved: clipped to 0..255, then truncated."""
    return np.uint8(np.clip(img, 0, 255))
