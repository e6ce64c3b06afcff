"""Hostile input as classes, not lists: what a caffemodel holds, what a definition's fields say,
and numbers that leave the float range.

Each property draws a file or a setting from a generator and runs the real command on it in a
process of its own. Whatever is drawn, the command either dreams (and writes a finite image
with its sidecar) or refuses: exit 1 or 2, one line, nothing written, inputs unchanged. A Caffe
abort or crash on the way is contained by the process boundary and is a refusal too.
"""

from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import slow_examples
from helpers import Snapshot, assert_refused, run_cli
from hypothesis import example, given
from hypothesis import strategies as st

pytestmark = pytest.mark.caffe

# A small net with the layer types a dream goes through: convolution, ReLU, max pooling, LRN.
NET = """
name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 32 dim: 32 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 8 kernel_size: 3 pad: 1 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
        convolution_param { num_output: 8 kernel_size: 3 } }
"""
DREAM = ["--end", "conv2", "--octave-n", "1", "--iter-n", "2", "--seed", "3"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """The small net's definition, its synthetic weights (bytes) and an input image."""
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    folder = tmp_path_factory.mktemp("small")
    (folder / "small.prototxt").write_text(NET)
    weights = write_synthetic_weights(folder / "small.prototxt", folder / "w.caffemodel", 0)
    rng = np.random.RandomState(0)
    PIL.Image.fromarray(rng.randint(0, 256, (40, 48, 3)).astype(np.uint8)).save(folder / "in.png")
    return folder, weights.read_bytes()


def dream(folder: Path, definition: Path, weights: Path, *flags):
    """Run the command from the folder's in.png into folder/out/; assert the contract; return
    the outcome ("dreamed" or the refusal's line)."""
    out = folder / "out"
    out.mkdir(exist_ok=True)
    before = Snapshot(folder)
    p = run_cli(
        *["dream", folder / "in.png", "-o", out / "o.png", "--raw", out / "o.npy"],
        *["--model-def", definition, "--weights", weights, *flags],
        env={"TMPDIR": str(folder)},
    )
    if p.returncode == 0:
        assert (out / "o.png").is_file() and (out / "o.png.json").is_file()
        assert np.isfinite(np.load(out / "o.npy")).all()
        for f in out.iterdir():
            f.unlink()
        return "dreamed"
    return assert_refused(p, before=before)


def write_case(small, tmp_path, definition_text=None, weights_bytes=None):
    folder, weights = small
    (tmp_path / "in.png").write_bytes((folder / "in.png").read_bytes())
    d, w = tmp_path / "net.prototxt", tmp_path / "w.caffemodel"
    d.write_text(definition_text or NET)
    w.write_bytes(weights if weights_bytes is None else weights_bytes)
    return d, w


def test_the_small_net_dreams(small, tmp_path):
    d, w = write_case(small, tmp_path)
    assert dream(tmp_path, d, w, *DREAM) == "dreamed"


# --- what a caffemodel holds -------------------------------------------------------------
def mutate_weights(data: bytes, how: str, where: int, value: float) -> bytes:
    """The weights with one thing changed, as a corrupt or hostile file would have it."""
    from deepdream_caffe.definition import import_caffe

    net = import_caffe().proto.caffe_pb2.NetParameter.FromString(data)
    with_blobs = [layer for layer in net.layer if len(layer.blobs)]
    layer = with_blobs[where % len(with_blobs)]
    blob = layer.blobs[where % len(layer.blobs)]
    if how == "one value fewer":
        del blob.data[-1]
    elif how == "one value more":
        blob.data.append(value)
    elif how == "a value":
        blob.data[where % len(blob.data)] = value
    elif how == "every value":
        blob.data[:] = [value] * len(blob.data)
    elif how == "a dimension":
        blob.shape.dim[where % len(blob.shape.dim)] += 1
    elif how == "a duplicated layer":
        net.layer.add().CopyFrom(layer)
    elif how == "a V1 copy of a layer":
        v1 = net.layers.add(name=layer.name)
        v1.blobs.extend(layer.blobs)
    elif how == "a renamed layer":
        layer.name += "_x"
    elif how == "a blob fewer":
        del layer.blobs[-1]
    elif how == "legacy dimensions":
        blob.num, blob.channels = 2, 3
    elif how == "truncated":
        return data[: where % len(data)]
    elif how == "garbage":
        return np.random.RandomState(where).bytes(where % 4096 + 1)
    return net.SerializeToString()


HOW = [
    "one value fewer",
    "one value more",
    "a value",
    "every value",
    "a dimension",
    "a duplicated layer",
    "a V1 copy of a layer",
    "a renamed layer",
    "a blob fewer",
    "legacy dimensions",
    "truncated",
    "garbage",
]
values = st.one_of(
    st.sampled_from([float("nan"), float("inf"), -float("inf"), 3e38, -3e38, 1e30, 0.0]),
    st.floats(width=32),
)


@slow_examples(20)
@given(how=st.sampled_from(HOW), where=st.integers(0, 2**16), value=values)
@example(how="one value fewer", where=0, value=0.0)
@example(how="a duplicated layer", where=1, value=0.0)
@example(how="a V1 copy of a layer", where=0, value=0.0)
@example(how="every value", where=0, value=3e38)
def test_any_caffemodel_dreams_or_is_refused_in_one_line(small, tmp_path, how, where, value):
    bad = mutate_weights(small[1], how, where, value)
    d, w = write_case(small, tmp_path, weights_bytes=bad)
    dream(tmp_path, d, w, *DREAM)


# --- what a definition's fields say --------------------------------------------------------
FIELDS = {  # a layer, and fields put into its parameters in the text
    "pool1": [
        "pad_h: {n} pad_w: 0",
        "pad: {n}",
        "pool: STOCHASTIC",
        "pool: AVE",
        "kernel_size: {n}",
        "stride: {n}",
        "global_pooling: true",
        "round_mode: FLOOR",
    ],
    "norm1": ["local_size: {n}", "norm_region: WITHIN_CHANNEL", "k: {f}", "beta: {f}"],
    "conv2": ["pad: {n}", "stride: {n}", "dilation: {n}", "group: {n}", "kernel_h: {n}"],
}
PARAM = {"pool1": "pooling_param {", "norm1": "lrn_param {", "conv2": "convolution_param {"}
numbers = st.one_of(st.sampled_from([0, 1, 2, 4, 31, 32, 33, 2**31 - 1]), st.integers(0, 2**31))
floats = st.one_of(st.sampled_from(["0", "-1", "1e30", "nan", "inf"]), st.floats(-10, 10).map(str))


def with_field(layer: str, field: str) -> str:
    opening = f'name: "{layer}"'
    start = NET.index(opening)
    at = NET.index(PARAM[layer], start) + len(PARAM[layer])
    return NET[:at] + f" {field} " + NET[at:]


@slow_examples(20)
@given(
    layer_field=st.sampled_from([(layer, f) for layer, fs in FIELDS.items() for f in fs]),
    n=numbers,
    f=floats,
)
@example(layer_field=("pool1", "pad_h: {n} pad_w: 0"), n=1, f="0")
@example(layer_field=("norm1", "local_size: {n}"), n=4, f="0")
@example(layer_field=("pool1", "pool: STOCHASTIC"), n=0, f="0")
@example(layer_field=("conv2", "pad: {n}"), n=2**31 - 1, f="0")
@example(layer_field=("conv2", "kernel_h: {n}"), n=4, f="0")
def test_any_definition_field_dreams_or_is_refused_in_one_line(small, tmp_path, layer_field, n, f):
    layer, field = layer_field
    text = with_field(layer, field.format(n=n, f=f))
    d, w = write_case(small, tmp_path, definition_text=text)
    dream(tmp_path, d, w, *DREAM)


# --- numbers that leave the float range ----------------------------------------------------
@slow_examples(12)
@given(
    step=st.one_of(st.sampled_from([1e30, 3.4e38, 1e20, 1.5]), st.floats(1e-3, 3.4e38)),
    clip=st.booleans(),
    iters=st.integers(1, 4),
)
@example(step=3.4e38, clip=False, iters=2)
@example(step=1e30, clip=False, iters=1)
def test_a_dream_that_overflows_is_refused_and_writes_nothing(small, tmp_path, step, clip, iters):
    d, w = write_case(small, tmp_path)
    flags = [*DREAM[:-4], "--iter-n", iters, "--seed", 3, "--step-size", repr(step)]
    outcome = dream(tmp_path, d, w, *flags, *([] if clip else ["--no-clip"]))
    if outcome != "dreamed":
        assert "float range" in outcome or "gradient" in outcome or "step-size" in outcome
