"""--channel-swap: the default is the notebook's ``[::-1]`` bit for bit; 0,1,2 feeds RGB nets.

The swap lists the net's input channels as indices into R,G,B (pycaffe's ``channel_swap``);
the mean is always given as B,G,R and subtracted from the channel of the same colour.
"""

import json

import numpy as np
import pytest
from helpers import Snapshot, assert_refused, main_in_process
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdream_caffe import cli, dream
from deepdream_caffe.definition import import_caffe
from deepdream_caffe.lab import notebook
from deepdream_caffe.models import IMAGENET_MEAN_BGR
from deepdream_caffe.net import load_net

pytestmark = pytest.mark.caffe


@pytest.fixture(scope="module")
def img():
    return np.random.RandomState(3).uniform(0, 255, (40, 56, 3)).astype(np.float32)


def test_default_is_the_notebooks_reversal(notebook_cells, load, img):
    """Cell 3's own preprocess and deprocess ([::-1]) against ours, on the default net."""
    net = load()
    assert list(net.transformer.channel_swap["data"]) == [2, 1, 0]
    ns = notebook.definitions(notebook_cells)  # cell 3's preprocess and deprocess
    ours, expected = dream.preprocess(net, img), ns["preprocess"](net, img)
    assert ours.dtype == expected.dtype and ours.tobytes() == expected.tobytes()
    back, expected_back = dream.deprocess(net, ours), ns["deprocess"](net, expected)
    assert back.dtype == expected_back.dtype and back.tobytes() == expected_back.tobytes()


def test_rgb_order_and_the_mean_by_colour(nets, img):
    definition, weights = nets["bvlc_googlenet"]
    bgr = load_net(definition, weights, "inception_3a/output", IMAGENET_MEAN_BGR)
    rgb = load_net(definition, weights, "inception_3a/output", IMAGENET_MEAN_BGR, (0, 1, 2))
    np.testing.assert_array_equal(
        rgb.transformer.mean["data"].ravel(), np.float32(IMAGENET_MEAN_BGR)[::-1]
    )
    ours = dream.preprocess(rgb, img)
    np.testing.assert_array_equal(ours[0], img[..., 0] - np.float32(IMAGENET_MEAN_BGR[2]))  # R
    np.testing.assert_array_equal(ours, dream.preprocess(bgr, img)[::-1])
    np.testing.assert_array_equal(dream.deprocess(rgb, ours), dream.deprocess(bgr, ours[::-1]))
    twisted = load_net(definition, weights, "inception_3a/output", IMAGENET_MEAN_BGR, (1, 2, 0))
    np.testing.assert_array_equal(
        dream.preprocess(twisted, img)[0], img[..., 1] - np.float32(IMAGENET_MEAN_BGR[1])
    )  # G first


def test_an_rgb_net_dreams_like_its_bgr_twin(tmp_path, img):
    """A net trained on RGB is a BGR net with its first filters' channels reversed: with
    --channel-swap 0,1,2 it must see the image its twin sees with the default."""
    caffe = import_caffe()
    from caffe import NetSpec
    from caffe import layers as L
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    n = NetSpec()
    n.data = L.Input(shape=dict(dim=[1, 3, 40, 56]))
    n.conv1 = L.Convolution(n.data, num_output=6, kernel_size=3)
    n.relu = L.ReLU(n.conv1, in_place=True)
    n.end = L.Convolution(n.conv1, num_output=4, kernel_size=3)
    definition = tmp_path / "net.prototxt"
    definition.write_text(str(n.to_proto()))
    bgr_weights = write_synthetic_weights(definition, tmp_path / "bgr.caffemodel", 2)
    net = caffe.Net(str(definition), str(bgr_weights), caffe.TEST)
    net.params["conv1"][0].data[...] = net.params["conv1"][0].data[:, ::-1].copy()
    net.save(str(tmp_path / "rgb.caffemodel"))

    grads = []
    for weights, swap in ((bgr_weights, (2, 1, 0)), (tmp_path / "rgb.caffemodel", (0, 1, 2))):
        net = load_net(definition, weights, "end", IMAGENET_MEAN_BGR, swap)
        net.blobs["data"].data[0] = dream.preprocess(net, img)
        net.forward(end="end")
        dream.objective_L2(net.blobs["end"])
        net.backward(start="end")
        grads.append(
            dream.deprocess(net, net.blobs["data"].diff[0])
            - dream.deprocess(net, np.zeros_like(net.blobs["data"].diff[0]))
        )  # the gradient as R,G,B
    assert np.abs(grads[0]).max() > 0
    # the same sums in another order: equal up to float32 rounding
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-4 * np.abs(grads[0]).max())


def test_the_flag_reaches_the_dream_and_the_sidecar(tmp_path, nets, sky):
    import PIL.Image

    definition, weights = nets["bvlc_googlenet"]
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    results = {}
    for swap in ("2,1,0", "0,1,2", None):
        out = tmp_path / f"{swap}.png"
        flags = ["--channel-swap", swap] if swap else []
        p = main_in_process(
            "dream",
            tmp_path / "in.png",
            "-o",
            out,
            "--model-def",
            definition,
            "--weights",
            weights,
            "--seed",
            1,
            "--iter-n",
            2,
            "--octave-n",
            1,
            "--raw",
            tmp_path / f"{swap}.npy",
            *flags,
        )
        assert p.returncode == 0, p.stderr
        results[swap] = np.load(tmp_path / f"{swap}.npy")
        sidecar = json.loads((tmp_path / f"{swap}.png.json").read_text())
        assert sidecar["channel_swap"] == [int(c) for c in (swap or "2,1,0").split(",")]
    np.testing.assert_array_equal(results[None], results["2,1,0"])
    assert np.abs(results["0,1,2"] - results["2,1,0"]).max() > 1  # the flag has an effect


@pytest.mark.parametrize("value", ["0,0,1", "0,1,3", "-1,0,1", "2,1", "0,1,2,3", "a,b,c", ""])
def test_bad_values_are_one_line_usage_errors(value, tmp_path):
    before = Snapshot(tmp_path)
    p = main_in_process("dream", "in.png", "-o", tmp_path / "o.png", f"--channel-swap={value}")
    assert_refused(p, "--channel-swap", before=before, codes=(2,))


@settings(max_examples=80, deadline=None)
@given(values=st.lists(st.integers(-3, 5), min_size=1, max_size=4))
def test_any_swap_parses_to_a_permutation_or_is_refused(values):
    text = ",".join(map(str, values))
    try:
        args = cli.build_parser().parse_args(
            ["dream", "in.png", "-o", "o.png", f"--channel-swap={text}"]
        )
    except SystemExit as e:
        assert e.code == 2 and sorted(values) != [0, 1, 2]
        return
    assert sorted(args.channel_swap) == [0, 1, 2] and list(args.channel_swap) == values
