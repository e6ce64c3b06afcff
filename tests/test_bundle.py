"""export-golden and compare, tested with second implementations that differ on purpose.

The deliberately wrong implementations are Caffe itself on an edited definition (floor instead
of ceil pooling at pool1; LRN without the division of alpha by n at pool1/norm1), so these
tests need nothing beyond Caffe; the PyTorch twin, where installed, is the honest one.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from deepdream_caffe.lab import bundle
from deepdream_caffe.models import IMAGENET_MEAN_BGR
from deepdream_caffe.net import load_net, prune, read_definition
from deepdream_caffe.params import DreamParams

pytestmark = [pytest.mark.caffe, pytest.mark.slow]
END = "inception_4c/output"
PARAMS = DreamParams(iter_n=2, octave_n=2)


@pytest.fixture(scope="module")
def exported(nets, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    definition, weights = nets["bvlc_googlenet"]
    p = subprocess.run([sys.executable, "-m", "deepdream_caffe.cli", "export-golden",
                        "--model-def", str(definition), "--weights", str(weights),
                        "--out", str(out), "--seed", "3", "--iter-n", "2", "--octave-n", "2"],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return out


def other_implementation(exported, tmp_path, edit=None, **load):
    """Recompute every stage with Caffe on a (possibly edited) copy of the definition."""
    meta = json.loads((exported / "bundle.json").read_text())
    model = read_definition(meta["definition"]["path"])
    if edit:
        edit({layer.name: layer for layer in model.layer})
    path = tmp_path / "other.prototxt"
    path.write_text(str(model))
    net = load_net(path, meta["weights"]["path"], END, IMAGENET_MEAN_BGR, **load)
    img = np.load(exported / "bundle.npz")["input_image"]
    arrays = bundle.stages(net, prune(model, END), img, PARAMS, meta["seed"])
    np.savez(tmp_path / "other.npz", **arrays)
    return tmp_path / "other.npz"


def compare_cli(exported, other):
    return subprocess.run([sys.executable, "-m", "deepdream_caffe.cli", "compare",
                           str(exported), str(other)], capture_output=True, text=True)


def test_bundle_holds_every_stage(exported):
    meta = json.loads((exported / "bundle.json").read_text())
    arrays = np.load(exported / "bundle.npz")
    assert meta["format"] == bundle.FORMAT and list(arrays.files) == meta["order"]
    forward = [k for k in meta["order"] if k.startswith("forward/")]
    assert forward[0] == "forward/conv1/7x7_s2" and forward[-1] == f"forward/{END}"
    assert arrays["input_image"].shape == (144, 256, 3)
    assert arrays["octave_sizes"].tolist() == [[103, 183], [144, 256]]
    assert not np.array_equal(arrays["make_step"], arrays["data"])


def test_the_notebook_net_passes_exactly(exported, tmp_path):
    other = other_implementation(exported, tmp_path, notebook_net=True)
    p = compare_cli(exported, other)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Verdict: PASS" in p.stdout and (exported / "compare.md").is_file()


def test_floor_pooling_is_caught_at_pool1(exported, tmp_path):
    def floor(layers):
        layers["pool1/3x3_s2"].pooling_param.round_mode = 1  # FLOOR
    p = compare_cli(exported, other_implementation(exported, tmp_path, floor))
    assert p.returncode == 1
    assert "first diverging blob: forward/pool1/3x3_s2" in p.stdout
    assert p.stderr.strip().endswith("compare.md") and "Traceback" not in p.stderr


def test_lrn_without_the_division_by_n_is_caught_at_norm1(exported, tmp_path):
    def undivided(layers):
        lrn = layers["pool1/norm1"].lrn_param
        lrn.alpha *= lrn.local_size  # Caffe divides alpha by n: this undoes it
    p = compare_cli(exported, other_implementation(exported, tmp_path, undivided))
    assert p.returncode == 1 and "first diverging blob: forward/pool1/norm1" in p.stdout


def test_pytorch_twin_passes_within_tolerances(exported, tmp_path, nets):
    pytest.importorskip("torch")
    from deepdream_caffe.lab.torchnet import TorchNet

    meta = json.loads((exported / "bundle.json").read_text())
    model = prune(read_definition(meta["definition"]["path"]), END)
    caffe_net = load_net(meta["definition"]["path"], meta["weights"]["path"], END,
                         IMAGENET_MEAN_BGR)
    twin = TorchNet(model, caffe_net, IMAGENET_MEAN_BGR)
    img = np.load(exported / "bundle.npz")["input_image"]
    np.savez(tmp_path / "twin.npz", **bundle.stages(twin, model, img, PARAMS, meta["seed"]))
    result = bundle.compare(exported, tmp_path / "twin.npz")
    assert result["passed"], bundle.markdown(result)
    rows = {r["array"]: r for r in result["rows"]}
    assert 0 < rows[f"forward/{END}"]["relative_l2"] < 1e-4  # different code, same numbers


def test_missing_files_are_one_clear_line(tmp_path):
    p = compare_cli(tmp_path, tmp_path / "x.npz")
    assert p.returncode == 1 and "does not exist" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
