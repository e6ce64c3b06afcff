"""The default (data gradient only) net against the notebook's net on topologies beyond GoogLeNet.

Each topology is a small net written here with caffe.NetSpec (or prototxt text), filled with
seeded synthetic weights. For each, the default set-up must really be the rewritten net (not
the fallback), and its data gradient and a whole dream must be bit-identical to the notebook's
net (force_backward, unpruned) on the same weights.
"""

import numpy as np
import pytest
from conftest import slow_examples
from hypothesis import example, given
from hypothesis import strategies as st

from deepdream_caffe import dream, fastnet
from deepdream_caffe.definition import import_caffe, notebook_reach, prune, read_definition
from deepdream_caffe.models import IMAGENET_MEAN_BGR

pytestmark = pytest.mark.caffe
SIDE = 24  # the declared input: 1 x 3 x 24 x 24


def conv(L, bottom, n, k=3, **kw):
    return L.Convolution(bottom, num_output=n, kernel_size=k, **kw)


def pooling_first(n, L, P):
    n.pool = L.Pooling(n.data, pool=P.Pooling.MAX, kernel_size=3, stride=2)
    n.conv = conv(L, n.pool, 8)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.end = conv(L, n.relu, 6)


def two_readers(n, L, P):
    n.a = conv(L, n.data, 4, pad=1)
    n.b = L.Pooling(n.data, pool=P.Pooling.AVE, kernel_size=3, stride=1, pad=1)
    n.cat = L.Concat(n.a, n.b)
    n.end = conv(L, n.cat, 6)


def eltwise_residual(n, L, P):
    n.c1 = conv(L, n.data, 3, pad=1)
    n.res = L.Eltwise(n.data, n.c1, operation=P.Eltwise.SUM, coeff=[1, 0.5])
    n.c2 = conv(L, n.res, 3, pad=1)
    n.prod = L.Eltwise(n.res, n.c2, operation=P.Eltwise.PROD)
    n.c3 = conv(L, n.prod, 3, pad=1)
    n.max = L.Eltwise(n.prod, n.c3, operation=P.Eltwise.MAX)
    n.end = conv(L, n.max, 4)


def eltwise_on_data(n, L, P):
    n.pool = L.Pooling(n.data, pool=P.Pooling.AVE, kernel_size=3, stride=1, pad=1)
    n.sum = L.Eltwise(n.data, n.pool)  # an Eltwise reads the input first
    n.end = conv(L, n.sum, 5)


def concat_with_data(n, L, P):
    n.c = conv(L, n.data, 5, pad=1)
    n.cat = L.Concat(n.data, n.c)
    n.end = conv(L, n.cat, 6)


def in_place_on_data(n, L, P):
    n.tanh = L.TanH(n.data, in_place=True)
    n.conv = conv(L, n.data, 6)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.end = conv(L, n.relu, 4)


def scale_batchnorm(n, L, P):
    n.conv = conv(L, n.data, 6)
    n.bn = L.BatchNorm(n.conv, in_place=True, batch_norm_param=dict(use_global_stats=True))
    n.scale = L.Scale(n.conv, in_place=True, bias_term=True)
    n.relu = L.ReLU(n.conv, in_place=True)
    n.end = conv(L, n.relu, 4)


def bias_prelu(n, L, P):
    n.bias = L.Bias(n.data)  # a parameter layer reads the input first
    n.prelu = L.PReLU(n.bias)
    n.conv = conv(L, n.prelu, 6)
    n.scaled = L.Scale(n.conv)  # not in place
    n.end = conv(L, n.scaled, 4)


def deconvolution(n, L, P):
    n.up = L.Deconvolution(
        n.data, convolution_param=dict(num_output=4, kernel_size=4, stride=2, pad=1)
    )
    n.down = conv(L, n.up, 6, stride=2)
    n.relu = L.ReLU(n.down, in_place=True)
    n.end = L.Deconvolution(n.relu, convolution_param=dict(num_output=3, kernel_size=2, stride=2))


def dropout(n, L, P):
    n.drop0 = L.Dropout(n.data, dropout_ratio=0.5)
    n.conv = conv(L, n.drop0, 6)
    n.drop1 = L.Dropout(n.conv, in_place=True, dropout_ratio=0.7)
    n.end = conv(L, n.conv, 4)


def power(n, L, P):
    n.pow = L.Power(n.data, power=2, scale=0.01, shift=1)
    n.conv = conv(L, n.pow, 6)
    n.sig = L.Sigmoid(n.conv)
    n.lrn = L.LRN(n.sig, local_size=3)
    n.end = conv(L, n.lrn, 4)


def slice_layers(n, L, P):
    n.r, n.gb = L.Slice(n.data, ntop=2, slice_point=[1])
    n.cr = conv(L, n.r, 3)
    n.cgb = conv(L, n.gb, 3)
    n.end = L.Concat(n.cgb, n.cr)


def flatten_inner_product(n, L, P):
    n.conv = conv(L, n.data, 4, stride=2)
    n.pool = L.Pooling(n.conv, pool=P.Pooling.MAX, kernel_size=2, stride=2)
    n.flat = L.Flatten(n.pool)
    n.end = L.InnerProduct(n.flat, num_output=10)


def reshape_inner_product(n, L, P):
    n.conv = conv(L, n.data, 4, stride=2)
    n.shaped = L.Reshape(n.conv, shape=dict(dim=[1, -1]))
    n.fc = L.InnerProduct(n.shaped, num_output=12)
    n.relu = L.ReLU(n.fc, in_place=True)
    n.end = L.InnerProduct(n.fc, num_output=5)


TOPOLOGIES = [
    pooling_first,
    two_readers,
    eltwise_residual,
    eltwise_on_data,
    concat_with_data,
    in_place_on_data,
    scale_batchnorm,
    bias_prelu,
    deconvolution,
    dropout,
    power,
    slice_layers,
    flatten_inner_product,
    reshape_inner_product,
]
FIXED_SIZE = {flatten_inner_product, reshape_inner_product}  # a fully connected end

# The input declared the old way (``input:`` fields, no Input layer), read first by a pooling.
INPUT_FIELDS = f"""
name: "input_fields"
input: "data"
input_shape {{ dim: 1 dim: 3 dim: {SIDE} dim: {SIDE} }}
layer {{ name: "pool" type: "Pooling" bottom: "data" top: "pool"
        pooling_param {{ pool: AVE kernel_size: 2 stride: 2 }} }}
layer {{ name: "end" type: "Convolution" bottom: "pool" top: "end"
        convolution_param {{ num_output: 5 kernel_size: 3 }} }}
"""


def write_net(folder, build):
    """Write the topology's prototxt and seeded synthetic weights; return both paths."""
    import_caffe()  # quiet
    from caffe import NetSpec
    from caffe import layers as L
    from caffe import params as P
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    if build == "input_fields":
        definition = folder / "input_fields.prototxt"
        definition.write_text(INPUT_FIELDS)
    else:
        definition = folder / f"{build.__name__}.prototxt"
        n = NetSpec()
        n.data = L.Input(shape=dict(dim=[1, 3, SIDE, SIDE]))
        build(n, L, P)
        definition.write_text(str(n.to_proto()))
    weights = write_synthetic_weights(definition, folder / (definition.stem + ".caffemodel"), 3)
    sane_batchnorm(definition, weights)
    return definition, weights


def sane_batchnorm(definition, weights):
    """Random BatchNorm statistics need a positive variance and a unit scale factor."""
    caffe = import_caffe()

    net = caffe.Net(str(definition), str(weights), caffe.TEST)
    found = False
    for layer in net.layers:
        if layer.type == "BatchNorm":
            _, var, factor = (b.data for b in layer.blobs)
            var[...] = np.abs(var) + 0.5
            factor[...] = 1
            found = True
    if found:
        net.save(str(weights))


@pytest.fixture(
    scope="module", params=TOPOLOGIES + ["input_fields"], ids=lambda b: getattr(b, "__name__", b)
)
def topology(request, tmp_path_factory):
    definition, weights = write_net(tmp_path_factory.mktemp("topology"), request.param)
    size = (SIDE, SIDE) if request.param in FIXED_SIZE else (31, 27)
    octave_n = 1 if request.param in FIXED_SIZE else 2
    return definition, weights, size, octave_n


def load(definition, weights, **kw):
    from deepdream_caffe.net import load_net

    return load_net(definition, weights, "end", IMAGENET_MEAN_BGR, **kw)


def gradient(net, img):
    """One forward and backward pass at the image's size, the L2 objective, as make_step."""
    src, dst = net.blobs["data"], net.blobs["end"]
    src.reshape(1, 3, *img.shape[:2])
    src.data[0] = dream.preprocess(net, img)
    net.forward(end="end")
    dream.objective_L2(dst)
    net.backward(start="end")
    return src.diff[0].copy()


def test_bit_identical_to_the_notebook_net(topology):
    definition, weights, size, octave_n = topology
    img = np.random.RandomState(1).uniform(0, 255, size + (3,)).astype(np.float32)
    fast, notebook = load(definition, weights), load(definition, weights, notebook_net=True)
    assert fast.dream_setup.startswith("data gradient only"), fast.dream_setup
    assert notebook.dream_setup == fastnet.NOTEBOOK_SETUP

    ours, expected = gradient(fast, img), gradient(notebook, img)
    assert np.abs(expected).max() > 0
    assert np.array_equal(ours, expected)

    fast, notebook = load(definition, weights), load(definition, weights, notebook_net=True)
    dreams = [
        dream.deepdream(
            net, img, iter_n=3, octave_n=octave_n, end="end", rng=np.random.RandomState(5)
        )
        for net in (fast, notebook)
    ]
    assert np.array_equal(*dreams)
    assert np.abs(dreams[0] - img).max() > 0.5  # and it did dream


def test_no_weight_gradient_is_computed(tmp_path):
    """Parameter layers of every kind on the path: only the added switch learns."""
    for build in (scale_batchnorm, bias_prelu, deconvolution):
        definition, weights = write_net(tmp_path, build)
        fast = load(definition, weights)
        gradient(fast, np.full((SIDE, SIDE, 3), 100, np.float32))
        learned = {
            name
            for name, blobs in fast.params.items()
            if any(np.abs(b.diff).max() > 0 for b in blobs)
        }
        assert learned == {fastnet.SWITCH}, build.__name__


def test_a_net_that_fails_the_check_falls_back_to_the_notebook_net(tmp_path, monkeypatch):
    definition, weights = write_net(tmp_path, pooling_first)
    rewrite = fastnet.data_gradient_only

    def without_switch(*args):  # the rewrite as it was before: data needs no gradient
        fast = rewrite(*args)
        layers = [layer for layer in fast.layer if layer.name != fastnet.SWITCH]
        del fast.layer[:]
        fast.layer.extend(layers)
        return fast

    monkeypatch.setattr(fastnet, "data_gradient_only", without_switch)
    net = load(definition, weights)
    assert net.dream_setup.startswith(
        fastnet.NOTEBOOK_UP_TO + " end: the data-gradient-only net differed"
    ), net.dream_setup
    assert "16x16 check" in net.dream_setup  # the smallest size its layers take, at least 16
    img = np.random.RandomState(2).uniform(0, 255, (SIDE, SIDE, 3)).astype(np.float32)
    expected = gradient(load(definition, weights, notebook_net=True), img)
    assert np.abs(expected).max() > 0
    assert np.array_equal(gradient(net, img), expected)


OPS = ["conv", "pool", "relu", "tanh", "eltwise", "concat", "scale", "power", "dropout"]


def random_net(n, L, P, steps):
    """A net from a list of (op, which earlier blob, which other blob): every op keeps the
    spatial size, so any blob can meet any other of the same channel count. In-place ops go
    on blobs nothing has read yet (data included), as Caffe requires."""
    blobs, read = [(n.data, 3)], set()  # (top, channels); indices of blobs read so far
    for i, (op, a, b) in enumerate(steps):
        a, b = a % len(blobs), b % len(blobs)
        (x, c), (y, cy) = blobs[a], blobs[b]
        name = f"l{i}"
        if op in ("relu", "tanh") and a not in read:
            setattr(n, name, (L.ReLU if op == "relu" else L.TanH)(x, in_place=True))
            continue
        read.update((a, b) if op in ("eltwise", "concat") else (a,))
        if op == "pool":
            top = L.Pooling(x, pool=P.Pooling.MAX, kernel_size=3, stride=1, pad=1)
        elif op == "eltwise" and c == cy:
            top = L.Eltwise(x, y)
        elif op == "concat":
            top, c = L.Concat(x, y), c + cy
        elif op == "scale":
            top = L.Scale(x, bias_term=True)
        elif op == "power":
            top = L.Power(x, power=1, scale=0.5, shift=0.1)
        elif op == "dropout":
            top = L.Dropout(x)
        else:
            top, c = conv(L, x, 4, pad=1), 4
        setattr(n, name, top)
        blobs.append((top, c))
    n.end = conv(L, blobs[-1][0], 3, pad=1)


@slow_examples(30)
@given(
    steps=st.lists(
        st.tuples(st.sampled_from(OPS), st.integers(0, 9), st.integers(0, 9)),
        min_size=1,
        max_size=6,
    )
)
@example(steps=[("conv", 0, 0), ("conv", 0, 0), ("eltwise", 0, 0), ("relu", 3, 0)])  # found
def test_any_generated_topology_is_bit_identical(tmp_path_factory, steps):
    def build(n, L, P):
        random_net(n, L, P, steps)

    build.__name__ = "generated"
    definition, weights = write_net(tmp_path_factory.mktemp("generated"), build)
    img = np.random.RandomState(4).uniform(0, 255, (SIDE, SIDE, 3)).astype(np.float32)
    fast = load(definition, weights)
    if not fast.dream_setup.startswith("data gradient only"):
        # Only where the notebook's net holds dead branches (layers the end does not need):
        # a Split of `data` then adds their zero diffs, and 0.0 + -0.0 flips the sign of a
        # zero, which the bit-for-bit check sees, so the notebook's net is rightly kept.
        model = read_definition(definition)
        assert len(prune(model, "end").layer) < len(notebook_reach(model, "end").layer), (
            steps,
            fast.dream_setup,
        )
    ours = gradient(fast, img)
    expected = gradient(load(definition, weights, notebook_net=True), img)
    assert ours.tobytes() == expected.tobytes(), steps  # the sign of zero included
