"""``noise:WIDTHxHEIGHT`` as the input of every command that takes an image."""

import json

import numpy as np
import pytest
from conftest import slow_examples
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from deepdream_caffe import dream, noise
from deepdream_caffe.errors import DreamError
from deepdream_caffe.models import IMAGENET_MEAN_BGR
from deepdream_caffe.net import load_net

FAST = ["--iter-n", "2", "--octave-n", "2"]


def run(*args, check=True):
    """The one CLI runner (tests/helpers.py), asserting success unless ``check`` is False."""
    return run_cli(*args, check=check)


@pytest.fixture
def byo(nets):
    definition, weights = nets["bvlc_googlenet"]
    return ["--model-def", definition, "--weights", weights]


def test_the_tutorials_noise_drawn_from_the_seeded_generator():
    img = noise.image("noise:5x3", np.random.RandomState(4))
    np.random.seed(4)
    np.testing.assert_array_equal(img, np.random.uniform(size=(3, 5, 3)) + 100.0)
    assert noise.size("noise:1024x575") == (575, 1024)
    assert noise.record("noise:5x3")["noise"] == "5x3"


@pytest.mark.parametrize(
    "spec", ["noise:", "noise:0x10", "noise:10x0", "noise:10", "noise:axb", "noise:1x2x3",
             "noise:-5x5", "noise:100000x5", "noise: 5x5"]
)  # fmt: skip
def test_bad_sizes_are_refused(spec):
    with pytest.raises(DreamError):
        noise.size(spec)


@pytest.mark.caffe
def test_dream_on_noise_is_the_notebook_after_the_seed(tmp_path, byo, nets):
    """--seed S: the noise first, then the jitter, from one RandomState(S)."""
    raw = tmp_path / "raw.npy"
    run("dream", "noise:96x64", "-o", tmp_path / "a.png", "--seed", 3, "--raw", raw, *byo, *FAST)
    np.random.seed(3)
    img = np.random.uniform(size=(64, 96, 3)) + 100.0
    net = load_net(*nets["bvlc_googlenet"], "inception_4c/output", IMAGENET_MEAN_BGR)
    expected = dream.deepdream(net, img, iter_n=2, octave_n=2)  # numpy's global generator
    np.testing.assert_array_equal(np.load(raw), expected)
    side = json.loads((tmp_path / "a.png.json").read_text())
    assert side["input"]["noise"] == "96x64" and side["job"]["input"] == "noise:96x64"
    run("dream", "noise:96x64", "-o", tmp_path / "b.png", "--seed", 3, *byo, *FAST)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert run("reproduce", tmp_path / "a.png.json").stdout.strip() == "bit-identical"


@pytest.mark.caffe
def test_guide_and_zoom_take_noise(tmp_path, byo):
    run("guide", "noise:64x48", "noise:40x40", "-o", tmp_path / "g.png", "--seed", 1, *byo, *FAST)
    side = json.loads((tmp_path / "g.png.json").read_text())
    assert side["guide"]["noise"] == "40x40"
    run("zoom", "noise:64x48", "-o", tmp_path / "f", "--frames", 2, "--seed", 1, *byo, *FAST)
    assert json.loads((tmp_path / "f" / "zoom.json").read_text())["input"]["noise"] == "64x48"


@pytest.mark.caffe
@slow_examples(6)
@given(
    spec=st.one_of(
        # malformed, empty, too small for the net, too large for memory
        st.sampled_from(["noise:", "noise:0x0", "noise:x", "noise:3", "noise:1e3x5"]),
        st.sampled_from(["noise:2x2", "noise:60000x60000", "noise:65536x65536"]),
        st.builds(
            "noise:{}x{}".format,
            st.integers(noise.MAX_SIDE + 1, 10**12),
            st.integers(-5, 10**12),
        ),
    )
)
def test_a_bad_or_huge_noise_size_is_one_line(tmp_path, byo, spec):
    out = tmp_path / "out.png"
    p = run("dream", spec, "-o", out, *byo, *FAST, check=False)
    assert p.returncode == 1, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not out.exists()


@pytest.mark.caffe
def test_export_golden_takes_noise(tmp_path, byo):
    out = tmp_path / "golden"
    run(
        "export-golden", "noise:64x48", "-o", out, "--seed", 2, *byo, "--iter-n", 1, "--octave-n", 1
    )
    bundle = np.load(out / "bundle.npz")
    expected = np.float32(np.random.RandomState(2).uniform(size=(48, 64, 3)) + 100.0)
    np.testing.assert_array_equal(bundle["input_image"], expected)
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["source"]["input"]["noise"] == "64x48"
    assert meta["run"]["input"]["noise"] == "64x48"


@pytest.mark.caffe
@pytest.mark.slow
def test_sweep_takes_noise(tmp_path, byo):
    out = tmp_path / "sweep"
    grid = ["--seeds", "0,1", "--ends", "inception_3b/output", "--iter-n", 1, "--octave-n", 1]
    run("sweep", "noise:64x48", "-o", out, *grid, "--workers", 1, "--threads-per-worker", 1, *byo)
    sidecars = sorted((out / "images").glob("*.png.json"))
    assert len(sidecars) == 2
    records = [json.loads(p.read_text()) for p in sidecars]
    assert {r["input"]["noise"] for r in records} == {"64x48"}
    assert {r["seed"] for r in records} == {0, 1}
