"""make_step's numpy lines against the notebook's, bit for bit, on a fake net.

make_step rolls, normalises, adds and clips with fewer temporary arrays than the notebook
(docs/performance.md, "The numpy side of make_step"). Here the notebook's own lines run beside
it on the same float32 images and gradients, many shapes, step sizes, jitters, means, with and
without clip, and the results must be the same bits.
No Caffe: lab/stepbench.py's FakeNet has a forward and backward pass that do nothing.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from deepdream_caffe import dream
from deepdream_caffe.errors import DreamError
from deepdream_caffe.lab import notebook
from deepdream_caffe.lab.stepbench import END, FakeNet


class NewGradients(FakeNet):
    """A FakeNet whose backward pass writes another gradient each time, as a real one would:
    its first one rolled by one more column, times ``scale``."""

    def __init__(self, h, w, seed=0, mean=None, scale=1.0):
        super().__init__(h, w, seed, **({} if mean is None else dict(mean=mean)))
        self.first, self.scale, self.passes = self.blobs["data"].diff.copy(), scale, 0

    def backward(self, start=None):
        self.passes += 1
        rolled = np.roll(self.first, self.passes, -1)
        self.blobs["data"].diff[...] = rolled * np.float32(self.scale)


def notebook_step(net, step_size, end, jitter, clip, rng, gradient=None):
    """The notebook's cell 6, its lines as they are (formatted); ``gradient`` as ours takes it."""
    src = net.blobs["data"]
    dst = net.blobs[end]

    ox, oy = rng.randint(-jitter, jitter + 1, 2)
    src.data[0] = np.roll(np.roll(src.data[0], ox, -1), oy, -2)

    if gradient is None:
        net.forward(end=end)
        dream.objective_L2(dst)
        net.backward(start=end)
        g = src.diff[0]
    else:
        g = gradient(net, end, dream.objective_L2)
    src.data[:] += step_size / np.abs(g).mean() * g

    src.data[0] = np.roll(np.roll(src.data[0], -ox, -1), -oy, -2)

    if clip:
        bias = net.transformer.mean["data"]
        src.data[:] = np.clip(src.data, -bias, 255 - bias)


def both(h, w, steps=3, seed=0, mean=None, scale=1.0, gradient=None, poison=False, **kw):
    """The image after ``steps`` steps of the notebook's lines, then of ours, as uint32 bits."""
    results = []
    for step in (notebook_step, None):
        net = NewGradients(h, w, seed, mean, scale)
        if poison:  # non-finite pixels travel through the roll, the add and the clip
            net.blobs["data"].data[0, :, 0, 0] = [np.nan, np.inf, -np.inf]
        rng = np.random.RandomState(seed)
        for _ in range(steps):
            if step is None:
                dream.make_step(net, end=END, rng=rng, gradient=gradient, **kw)
            else:
                step(net, kw["step_size"], END, kw["jitter"], kw["clip"], rng, gradient)
        results.append(net.blobs["data"].data.view(np.uint32).copy())
    return results


# the default, odd ones, an int, and numpy scalars (a float64 one makes the product float64)
STEP_SIZES = [1.5, 1 / 3, 2, np.float32(2.5), np.float64(0.1)]


@pytest.mark.parametrize("step_size", STEP_SIZES, ids=repr)
@pytest.mark.parametrize("clip", [True, False])
def test_default_size_bit_identical(step_size, clip):
    expected, ours = both(575, 1024, step_size=step_size, jitter=32, clip=clip)
    np.testing.assert_array_equal(ours, expected)


@given(
    h=st.integers(1, 70),
    w=st.integers(1, 70),
    step_size=st.one_of(
        st.floats(1e-3, 1e3),
        st.integers(1, 9),
        st.floats(1e-3, 1e3).map(np.float32),
        st.floats(1e-3, 1e3).map(np.float64),
    ),
    jitter=st.integers(0, 80),  # more than the image is wide: np.roll's modulo
    clip=st.booleans(),
    mean=st.sampled_from([None, np.float64([1.5, -3.0, 250.0]), np.float32([0, 0, 0])]),
    scale=st.sampled_from([1.0, 1e-20, 1e20]),  # a tiny or huge gradient, same normalised step
    seed=st.integers(0, 2**16),
    poison=st.booleans(),
)
def test_any_shape_and_parameters_bit_identical(
    h, w, step_size, jitter, clip, mean, scale, seed, poison
):
    expected, ours = both(
        h, w, 2, seed, mean, scale, step_size=step_size, jitter=jitter, clip=clip, poison=poison
    )
    np.testing.assert_array_equal(ours, expected)


def plain(net, end, objective):
    net.backward(start=end)
    return net.blobs["data"].diff[0]


# ``gradient=`` callables returning the diff in other layouts and dtypes (--tile's path)
LAYOUTS = {
    "diff": plain,
    "copy": lambda *a: plain(*a).copy(),
    "rolled": lambda *a: np.roll(np.roll(plain(*a), 3, -1), -2, -2),  # as tile.py's
    "fortran": lambda *a: np.asfortranarray(plain(*a)),  # another order of the sum
    "strided": lambda *a: np.repeat(plain(*a), 2, axis=-1)[..., ::2],
    "float64": lambda *a: plain(*a).astype(np.float64),
    "batch": lambda *a: plain(*a)[None],  # 1 x 3 x h x w, broadcast by the add
}
GRADIENT_CASES = [(k, (33, 17)) for k in LAYOUTS] + [
    (k, (575, 1024)) for k in ("diff", "rolled", "fortran")
]


@pytest.mark.parametrize("layout,shape", GRADIENT_CASES)
def test_gradient_callable_bit_identical(layout, shape):
    expected, ours = both(*shape, gradient=LAYOUTS[layout], step_size=1.5, jitter=32, clip=True)
    np.testing.assert_array_equal(ours, expected)


def test_the_scratch_image_is_used():
    """The float32 case really takes the path without temporaries (the others fall back)."""
    net = FakeNet(5, 6)
    data, g = net.blobs["data"].data, net.blobs["data"].diff[0]
    scratch = np.empty_like(g)
    g_mean = dream.mean_abs(g, scratch)
    assert g_mean.dtype == np.float32
    np.testing.assert_array_equal(scratch, np.abs(g))
    expected = data + 1.5 / g_mean * g
    dream.ascend(data, 1.5 / g_mean, g, scratch)
    np.testing.assert_array_equal(scratch, 1.5 / g_mean * g)
    np.testing.assert_array_equal(data.view(np.uint32), expected.view(np.uint32))


def test_notebook_cell_bit_identical(notebook_cells):
    """Against the notebook's own cell 6, run from its file: the default parameters."""
    make_step = notebook.run_cells([notebook_cells[6]])["make_step"]
    images = []
    for ours in (False, True):
        net = NewGradients(575, 1024, seed=3)
        np.random.seed(3)
        rng = np.random.RandomState(3)
        for _ in range(4):
            if ours:
                dream.make_step(net, end=END, rng=rng)
            else:
                make_step(net, end=END)
        images.append(net.blobs["data"].data.view(np.uint32).copy())
    np.testing.assert_array_equal(*images)


def test_roll_is_the_notebook_permutation():
    img = np.arange(3 * 5 * 7, dtype=np.float32).reshape(3, 5, 7)
    for ox, oy in [(0, 0), (1, 2), (-3, 4), (7, -5), (64, -64), (np.int64(-33), np.int64(32))]:
        expected = np.roll(np.roll(img, ox, -1), oy, -2)
        for before in (None, np.full_like(img, np.nan)):  # its own copy, or one given
            got = img.copy()
            dream.roll(got, ox, oy, before)
            np.testing.assert_array_equal(got, expected)


def test_zero_gradient_still_stops():
    net = FakeNet(9, 11)
    net.blobs["data"].diff[...] = 0
    before = net.blobs["data"].data.copy()
    with pytest.raises(DreamError, match="is zero"):
        dream.make_step(net, end=END, rng=np.random.RandomState(0), jitter=0)
    np.testing.assert_array_equal(net.blobs["data"].data, before)  # jitter 0: untouched


def same_bits(a, b):
    assert a.dtype == b.dtype and a.shape == b.shape
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@given(
    c=st.integers(1, 4),
    h=st.integers(1, 60),
    w=st.integers(1, 60),
    zy=st.one_of(st.floats(0.05, 4.0), st.sampled_from([1 / 1.4, 1.4, 1.0, 0.5])),
    zx=st.one_of(st.floats(0.05, 4.0), st.sampled_from([1 / 1.4, 1.4, 1.0, 2.0])),
    spread=st.sampled_from([1.0, 255.0, 1e30]),
    zeros=st.sampled_from([None, 0.0, -0.0]),
    seed=st.integers(0, 2**16),
)
def test_zoom_plane_by_plane_is_the_notebooks_zoom(c, h, w, zy, zx, spread, zeros, seed):
    """deepdream's octave zoom, against the notebook's nd.zoom(img, (1, zy, zx), order=1)."""
    import scipy.ndimage as nd

    rng = np.random.RandomState(seed)
    img = np.float32((rng.rand(c, h, w) - 0.5) * spread)
    if zeros is not None:  # whole regions of +0.0 or -0.0: the signs of zero must match too
        img[:, : h // 2] = zeros
    factors = (1, zy, zx)
    same_bits(dream.zoom(img, factors), nd.zoom(img, factors, order=1))


@pytest.mark.parametrize("size", [(575, 1024), (411, 731), (210, 373)])
def test_zoom_of_the_default_octaves_is_the_notebooks(size):
    """The default dream's octave sizes: down by 1.4, and the detail back up."""
    import scipy.ndimage as nd

    img = np.float32((np.random.RandomState(1).rand(3, *size) - 0.5) * 300)
    down = dream.zoom(img, (1, 1.0 / 1.4, 1.0 / 1.4))
    same_bits(down, nd.zoom(img, (1, 1.0 / 1.4, 1.0 / 1.4), order=1))
    up = (1, 1.0 * size[0] / down.shape[1], 1.0 * size[1] / down.shape[2])
    same_bits(dream.zoom(down, up), nd.zoom(down, up, order=1))


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_zoom_of_a_non_finite_image_takes_the_notebooks_call(bad):
    """A zero weight turns an infinity into NaN in the notebook's call, and not plane by
    plane: such an image goes through the notebook's call itself."""
    import scipy.ndimage as nd

    img = np.float32(np.random.RandomState(2).rand(3, 9, 11))
    img[1, 4, 5] = bad
    same_bits(dream.zoom(img, (1, 0.7, 1.3)), nd.zoom(img, (1, 0.7, 1.3), order=1))
