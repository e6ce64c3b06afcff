"""export-golden and compare, tested with second implementations that are wrong on purpose.

Each wrong port must get the right diagnosis. Most are made without PyTorch: Caffe itself on
an edited definition (floor pooling, LRN without the division of alpha by n), or the bundle's
own arrays perturbed with numpy the way a port gets them wrong (x256 preprocessing, RGB for
BGR, pre-ReLU naming, an objective without the 1/2, a half step). The PyTorch twin, through
examples/pytorch_export.py, is the honest second implementation where torch is installed.
"""

import hashlib
import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import Snapshot, assert_refused, main_in_process, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepdream_caffe import cli, fastnet
from deepdream_caffe.definition import read_definition
from deepdream_caffe.lab import bundle
from deepdream_caffe.models import IMAGENET_MEAN_BGR
from deepdream_caffe.net import load_net
from deepdream_caffe.params import DreamParams

pytestmark = [pytest.mark.caffe]
END = "inception_4c/output"
PARAMS = DreamParams(iter_n=2, octave_n=2)
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def exported(nets, sky, tmp_path_factory):
    """A bundle of the 128x72 sky, written by the command as a user runs it."""
    tmp = tmp_path_factory.mktemp("bundle")
    PIL.Image.fromarray(np.uint8(sky)).save(tmp / "sky.png")
    definition, weights = nets["bvlc_googlenet"]
    run_cli(
        "export-golden",
        tmp / "sky.png",
        "--model-def",
        definition,
        "--weights",
        weights,
        "-o",
        tmp / "golden",
        "--seed",
        3,
        "--iter-n",
        2,
        "--octave-n",
        2,
        check=True,
    )
    return tmp / "golden"


@pytest.fixture(scope="module")
def ours(exported):
    with np.load(exported / "bundle.npz") as npz:
        return {k: npz[k] for k in npz.files}


@pytest.fixture(scope="module")
def meta(exported):
    return json.loads((exported / "bundle.json").read_text())


def submit(path, arrays, **changes):
    """Write a submission: ``arrays`` with some keys changed (None drops a key)."""
    out = {k: v for k, v in {**arrays, **changes}.items() if v is not None}
    np.savez(path, **out)
    return path


def compare_cli(*args, capsys=None):
    p = main_in_process("compare", *args)
    return p.returncode, p.stdout, p.stderr


def caffe_port(exported, nets, tmp_path, edit=None, **load):
    """Recompute every stage with Caffe on a (possibly edited) copy of the bundle's net."""
    model = read_definition(exported / "net.prototxt")
    if edit:
        edit({layer.name: layer for layer in model.layer})
    path = tmp_path / "other.prototxt"
    path.write_text(str(model))
    net = load_net(path, nets["bvlc_googlenet"][1], END, IMAGENET_MEAN_BGR, **load)
    img = np.load(exported / "bundle.npz")["input_image"]
    np.savez(tmp_path / "other.npz", **bundle.stages(net, model, img, PARAMS, 3))
    return tmp_path / "other.npz"


# --- the bundle ----------------------------------------------------------------------------
def test_bundle_is_self_contained_and_hashed(exported, ours, meta, nets):
    assert meta["format"] == bundle.FORMAT and list(ours) == meta["order"]
    for name in bundle.FILES:
        data = (exported / name).read_bytes()
        assert meta["files"][name] == {
            "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
        }
    # "source" and "run" record the files and the run that made the bundle, with their paths
    without_source = json.dumps({k: v for k, v in meta.items() if k not in ("source", "run")})
    assert str(exported) not in without_source and "/tmp" not in without_source
    assert meta["source"]["weights"]["path"] == str(Path(nets["bvlc_googlenet"][1]).resolve())
    assert meta["weights_kind"] == "user"
    assert all(a.dtype == np.float32 for a in ours.values())  # octave_sizes too
    assert ours["octave_sizes"].tolist() == [[51, 91], [72, 128]]
    assert ours["input_image"].shape == (72, 128, 3)
    forward = [k for k in meta["order"] if k.startswith("forward/")]
    assert forward[0] == "forward/conv1/7x7_s2" and forward[-1] == f"forward/{END}"
    assert meta["blobs"]["conv1/7x7_s2"]["post_relu"] and not meta["blobs"][END]["post_relu"]
    assert meta["blobs"]["pool1/norm1"]["local_size"] == 5
    assert not np.array_equal(ours["make_step"], ours["data"])


def test_weights_npz_holds_the_nets_parameters_by_caffe_name(exported, meta, nets):
    caffe_net = load_net(
        nets["bvlc_googlenet"][0], nets["bvlc_googlenet"][1], END, IMAGENET_MEAN_BGR
    )
    with np.load(exported / "weights.npz") as w:
        assert sorted(w.files) == sorted(meta["weights"])
        for layer, blobs in caffe_net.params.items():
            if layer == fastnet.SWITCH:  # the fast net's own Scale, not a weight of the model
                continue
            for i, blob in enumerate(blobs):
                assert np.array_equal(w[f"{layer}/{i}"], blob.data)
                assert meta["weights"][f"{layer}/{i}"]["shape"] == list(blob.data.shape)
    assert meta["weights"]["conv1/7x7_s2/0"]["shape"] == [64, 3, 7, 7]


def test_weights_kind_is_published_only_for_the_verified_file(nets, tmp_path, monkeypatch):
    from deepdream_caffe import models
    from deepdream_caffe.assets import Asset, file_hash
    from deepdream_caffe.job import Job

    weights = nets["bvlc_googlenet"][1]
    assert bundle.weights_kind(Job(model="bvlc_googlenet", weights=weights)) == "user"
    record = models.MODELS["bvlc_googlenet"]
    as_if = Asset(
        record.weights.filename, record.weights.url, "sha256:" + file_hash(weights, "sha256")
    )
    monkeypatch.setitem(models.MODELS, "bvlc_googlenet", replace(record, weights=as_if))
    assert bundle.weights_kind(Job(model="bvlc_googlenet", weights=weights)).startswith("published")
    assert bundle.weights_kind(Job(model_def=weights, weights=weights)) == "user"


def test_export_golden_spells_its_flags_like_dream():
    parser = cli.build_parser()
    args = parser.parse_args(["export-golden", "in.png", "--out", "old"])
    assert args.input == Path("in.png") and args.output == Path("old")
    args = parser.parse_args(["export-golden", "-o", "new"])
    assert args.input is None and args.output == Path("new")
    help_text = parser._subparsers._group_actions[0].choices["export-golden"].format_help()
    assert "--output DIR" in help_text and not re.search(r"--out\b(?!put)", help_text)


# --- honest second implementations pass -----------------------------------------------------
def test_the_notebook_net_passes_and_writes_no_report_unless_asked(
    exported, nets, tmp_path, capsys
):
    other = caffe_port(exported, nets, tmp_path, notebook_net=True)
    before = sorted(p.name for p in exported.iterdir())
    code, out, err = compare_cli(exported, other, capsys=capsys)
    assert code == 0, out + err
    assert "Verdict: PASS" in out and "54 judged, 0 failing, 0 missing, 0 unknown" in out
    assert sorted(p.name for p in exported.iterdir()) == before
    code, out, _ = compare_cli(exported, other, "--report", tmp_path / "r.md", capsys=capsys)
    assert code == 0 and (tmp_path / "r.md").read_text() == out


def test_a_batch_dimension_is_squeezed(exported, ours, tmp_path, capsys):
    batched = {k: v[None] if k != "octave_sizes" else v for k, v in ours.items()}
    code, out, err = compare_cli(exported, submit(tmp_path / "b.npz", batched), capsys=capsys)
    assert code == 0, out + err
    assert "batch dimension squeezed" in out


# --- wrong ports get the right diagnosis -----------------------------------------------------
def failing(exported, other, capsys=None):
    """compare refuses ``other`` (tests/helpers.py), leaving the bundle and it unchanged."""
    before = Snapshot(exported, Path(other).parent)
    p = main_in_process("compare", exported, other)
    assert_refused(p, before=before, codes=(1,))
    return p.stdout, p.stderr


def test_floor_pooling_is_named_at_pool1(exported, nets, tmp_path, capsys):
    def floor(layers):
        layers["pool1/3x3_s2"].pooling_param.round_mode = 1  # FLOOR

    out, err = failing(exported, caffe_port(exported, nets, tmp_path, floor), capsys)
    assert "first failing stage forward (at forward/pool1/3x3_s2)" in err
    assert "pool1/3x3_s2: your pooling rounds the output size down" in out
    assert "ceil_mode=True" in out


def test_lrn_without_the_division_by_n_is_named(exported, nets, tmp_path, capsys):
    def undivided(layers):
        lrn = layers["pool1/norm1"].lrn_param
        lrn.alpha *= lrn.local_size  # Caffe divides alpha by n: this undoes it

    out, err = failing(exported, caffe_port(exported, nets, tmp_path, undivided), capsys)
    assert "(at forward/pool1/norm1)" in err
    assert "starts at layer pool1/norm1 (LRN)" in out
    assert "does not divide alpha by local_size (5)" in out


def bgr_input(ours):
    return np.float32(np.rollaxis(ours["input_image"], 2)[::-1])


def mean():
    return np.float32(IMAGENET_MEAN_BGR)[:, None, None]


def test_x256_preprocessing_with_another_mean_is_named(exported, ours, tmp_path, capsys):
    other_mean = np.float32([103.939, 116.779, 123.68])[:, None, None]
    data = bgr_input(ours) / 255 * 256 - other_mean
    out, err = failing(exported, submit(tmp_path / "o.npz", ours, data=data), capsys)
    assert "first failing stage data" in err
    assert "yours is 1.00392 x ours: the image was scaled by 256 instead of 255" in out
    assert (
        "your mean differs: you subtract (103.939, 116.779, 123.680), the notebook "
        "(104, 116, 122)" in out
    )
    assert "reverse order" not in out


def test_rgb_for_bgr_is_named(exported, ours, tmp_path, capsys):
    data = np.float32(np.rollaxis(ours["input_image"], 2)) - mean()
    out, _ = failing(exported, submit(tmp_path / "o.npz", ours, data=data), capsys)
    assert "your channels are in reverse order: RGB where Caffe's net takes BGR" in out
    assert "x ours" not in out


def test_pre_relu_naming_is_named(exported, ours, tmp_path, capsys):
    post = ours["forward/conv1/7x7_s2"]
    rng = np.random.RandomState(0)
    pre = np.where(post > 0, post, -rng.uniform(0, 2, post.shape)).astype(np.float32)
    out, err = failing(
        exported, submit(tmp_path / "o.npz", ours, **{"forward/conv1/7x7_s2": pre}), capsys
    )
    assert "(at forward/conv1/7x7_s2)" in err
    assert "forward/conv1/7x7_s2: yours holds the values before the ReLU" in out
    assert "| forward/pool1/3x3_s2 | ok |" in out


def test_a_failing_blob_before_a_passing_one_gets_the_naming_hint(exported, ours, tmp_path, capsys):
    blob = "forward/conv2/3x3_reduce"
    out, _ = failing(exported, submit(tmp_path / "o.npz", ours, **{blob: ours[blob] * 1.5}), capsys)
    assert f"{blob} fails but the next blob, forward/conv2/3x3, passes" in out


def test_objective_without_the_half_is_named(exported, ours, tmp_path, capsys):
    doubled = {k: 2 * ours[k] for k in ("objective_diff", "data_gradient", "step_gradient")}
    out, err = failing(exported, submit(tmp_path / "o.npz", ours, **doubled), capsys)
    assert "first failing stage objective_diff" in err
    assert "also failing: data_gradient, step_gradient" in err
    assert "objective_diff: yours is 2 x ours: your objective is |end|^2 without the 1/2" in out
    assert "| make_step | ok |" in out  # the normalised step does not see the factor


def test_a_half_step_names_the_step_stage_and_its_arithmetic(exported, ours, tmp_path, capsys):
    half = ours["data"] + 0.5 * (ours["make_step"] - ours["data"])
    out, err = failing(exported, submit(tmp_path / "o.npz", ours, make_step=half), capsys)
    assert "first failing stage make_step (at make_step)" in err
    assert "make_step: your update is 0.5 x ours" in out
    assert "your step arithmetic differs" in out
    out, _ = failing(
        exported,
        submit(tmp_path / "o.npz", ours, make_step=half, **{bundle.STEP_FROM_OUR_GRADIENT: half}),
        capsys,
    )
    assert "| make_step/from_our_gradient | FAIL |" in out and "0 unknown" in out
    assert "your step fails even from our step_gradient" in out


def test_a_wrong_gradient_is_told_from_a_wrong_step(exported, ours, meta, tmp_path, capsys):
    from deepdream_caffe.lab.diagnosis import notebook_step

    g = ours["step_gradient"] + np.float32(
        np.random.RandomState(1).normal(0, np.abs(ours["step_gradient"]).mean(), ours["data"].shape)
    )
    step = notebook_step(ours["data"], g, meta)
    out, _ = failing(
        exported, submit(tmp_path / "o.npz", ours, step_gradient=g, make_step=step), capsys
    )
    assert "your step arithmetic is right" in out and "| make_step | FAIL |" in out
    out, _ = failing(
        exported,
        submit(
            tmp_path / "o.npz",
            ours,
            step_gradient=g,
            make_step=step,
            **{bundle.STEP_FROM_OUR_GRADIENT: ours["make_step"]},
        ),
        capsys,
    )
    assert "| make_step/from_our_gradient | ok |" in out
    assert "from our step_gradient your step gives ours, so your step is right" in out


def test_octave_sizes_are_judged_exactly_and_rounding_down_is_named(
    exported, ours, tmp_path, capsys
):
    from deepdream_caffe.lab.diagnosis import octave_hint

    off = ours["octave_sizes"] - [[0, 1], [0, 0]]
    out, err = failing(exported, submit(tmp_path / "o.npz", ours, octave_sizes=off), capsys)
    assert "first failing stage octave_sizes" in err
    params = {"octave_n": 3, "octave_scale": 1.4}  # 75 / 1.4 = 53.6: rounds to 54
    assert (
        "rounded down"
        in octave_hint((75, 100), np.float64([[37, 50], [53, 71], [75, 100]]), params)[0]
    )
    assert octave_hint((75, 100), np.float64([[39, 51], [54, 71], [75, 100]]), params) == []


# --- malformed submissions: one line, exit 1, nothing judged passes ------------------------
def test_an_empty_npz_fails(exported, tmp_path, capsys):
    _, err = failing(exported, submit(tmp_path / "e.npz", {}), capsys)
    assert "holds no arrays" in err


def test_only_the_input_image_fails(exported, ours, tmp_path, capsys):
    _, err = failing(
        exported, submit(tmp_path / "i.npz", {"input_image": ours["input_image"]}), capsys
    )
    assert "holds no array the bundle can judge" in err


def test_wrong_names_fail_and_are_listed_with_a_guess(exported, ours, tmp_path, capsys):
    renamed = {k.removeprefix("forward/"): v for k, v in ours.items() if "/" in k}
    renamed["conv2_3x3"] = renamed.pop("conv2/3x3")  # PyTorch's module naming
    renamed["pool1"] = renamed.pop("pool1/3x3_s2")
    out, err = failing(exported, submit(tmp_path / "w.npz", renamed), capsys)
    assert "holds no array the bundle can judge (48 unknown key(s): conv1/7x7_s2" in err
    assert "unknown key 'conv1/7x7_s2' is not judged (did you mean forward/conv1/7x7_s2?)" in out
    assert "unknown key 'conv2_3x3' is not judged (did you mean forward/conv2/3x3?)" in out
    assert "unknown key 'pool1' is not judged (did you mean forward/pool1/3x3_s2?)" in out
    assert "0 judged" in out and "48 unknown" in out


def test_object_arrays_are_one_line(exported, ours, tmp_path, capsys):
    arrays = {**ours, "data": np.array([ours["data"], "x"], dtype=object)}
    np.savez(tmp_path / "o.npz", **arrays)  # numpy pickles object arrays when saving
    _, err = failing(exported, tmp_path / "o.npz", capsys)
    assert "array 'data' holds Python objects" in err


def test_a_npy_is_one_line(exported, ours, tmp_path, capsys):
    np.save(tmp_path / "data.npy", ours["data"])
    _, err = failing(exported, tmp_path / "data.npy", capsys)
    assert "is a .npy file holding one array" in err


@pytest.mark.parametrize(
    "content", [b"", b"PK\x03\x04 broken", b"\x93NUMPY garbage", b"not numpy at all"]
)
def test_files_that_are_not_npz_are_one_line(exported, tmp_path, capsys, content):
    (tmp_path / "x.npz").write_bytes(content)
    _, err = failing(exported, tmp_path / "x.npz", capsys)
    assert "x.npz" in err


def test_missing_files_are_one_line(tmp_path, capsys):
    _, err = failing(tmp_path, tmp_path / "x.npz")
    assert "bundle.json does not exist" in err


def test_a_bundle_of_another_format_or_changed_is_refused(exported, ours, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(exported, copy)
    other = submit(tmp_path / "o.npz", ours)
    meta = json.loads((copy / "bundle.json").read_text())
    (copy / "bundle.json").write_text(json.dumps({**meta, "format": 1}))
    _, err = failing(copy, other, capsys)
    assert "is bundle format 1; this deepdream-caffe reads format 2" in err
    (copy / "bundle.json").write_text(json.dumps(meta))
    with open(copy / "bundle.npz", "ab") as f:
        f.write(b"\0")
    _, err = failing(copy, other, capsys)
    assert "bundle.npz is missing or does not match its sha256" in err


def test_require_fails_on_missing_keys_and_unknown_patterns(exported, ours, tmp_path, capsys):
    partial = submit(tmp_path / "p.npz", {"data": ours["data"]})
    code, out, _ = compare_cli(exported, partial, capsys=capsys)
    assert code == 0 and "1 judged" in out  # what is there passes
    lacks = "lacks 48 required key(s): forward/conv1/7x7_s2"
    p = main_in_process("compare", exported, partial, "--require", "data,forward/*")
    assert_refused(p, lacks, codes=(1,))
    nothing = "--require 'nothing' names no key of the bundle"
    p = main_in_process("compare", exported, partial, "--require", "make_step,nothing")
    assert_refused(p, nothing, codes=(1,))


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    key=st.sampled_from(
        [
            "data",
            "forward/conv1/7x7_s2",
            "forward/inception_4c/output",
            "objective_diff",
            "data_gradient",
            "step_gradient",
            "make_step",
            "octave_sizes",
        ]
    ),
    value=st.sampled_from([np.nan, np.inf, -np.inf]),
    where=st.integers(0, 10**9),
)
def test_no_non_finite_value_ever_passes(exported, ours, tmp_path, key, value, where):
    bad = ours[key].copy()
    bad.flat[where % bad.size] = value
    result = bundle.compare(exported, submit(tmp_path / "nan.npz", ours, **{key: bad}))
    row = next(r for r in result["rows"] if r["array"] == key)
    assert not result["passed"] and row["status"] == "FAIL"
    assert "non-finite" in row["notes"][-1]


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    keys=st.lists(
        st.sampled_from(
            ["data", "forward/pool1/norm1", "make_step", "junk", "octave_sizes", "deepdream"]
        ),
        unique=True,
    ),
    shape=st.lists(st.integers(0, 4), max_size=4),
    dtype=st.sampled_from(["f4", "f8", "i8", "u1", "?", "c8", "U3", "V4"]),
)
def test_any_submission_gives_a_verdict_never_a_traceback(
    exported, tmp_path, capsys, keys, shape, dtype
):
    np.savez(tmp_path / "any.npz", **{k: np.zeros(shape, dtype) for k in keys})
    code, out, err = compare_cli(exported, tmp_path / "any.npz", capsys=capsys)
    assert code in (0, 1) and "Traceback" not in err
    if code == 1:
        assert_refused(subprocess.CompletedProcess([], code, out, err), codes=(1,))
    else:  # only all-zero arrays of the right shape could pass, and none here has it
        pytest.fail(out)


# --- the PyTorch reference exporter and the project's twin -----------------------------------
def exporter():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import pytorch_export
    finally:
        sys.path.remove(str(EXAMPLES))
    return pytorch_export


def twin(folder):
    from deepdream_caffe.lab.torchnet import CaffeModule, params_from_weights_npz

    model = read_definition(folder / "net.prototxt")
    return CaffeModule(model, params_from_weights_npz(bundle.read_npz(folder / "weights.npz")))


@pytest.mark.slow
def test_pytorch_twin_through_the_exporter_passes(exported, tmp_path):
    pytest.importorskip("torch")
    module = twin(exported)
    names = module.name_map()
    names["pool1/norm1"] = "conv2_3x3_reduce:input"  # a blob taken where the next layer reads
    exporter().export(exported, module, names, tmp_path / "twin.npz", dream=False)
    result = bundle.compare(exported, tmp_path / "twin.npz", ["data", "forward", "make_step"])
    assert result["passed"], bundle.markdown(result)
    rows = {r["array"]: r for r in result["rows"]}
    assert 0 < rows[f"forward/{END}"]["relative_l2"] < 1e-5  # different code, same numbers
    assert rows["deepdream"]["status"] == "missing"
    assert rows[bundle.STEP_FROM_OUR_GRADIENT]["relative_l2"] < 1e-5  # same gradient: rounding


@pytest.mark.slow
def test_pytorch_port_mapped_naively_and_without_the_half(exported, tmp_path):
    pytest.importorskip("torch")
    module = twin(exported)
    names = {blob: f"{sub}:raw" for blob, sub in module.name_map().items()}
    exporter().export(
        exported,
        module,
        names,
        tmp_path / "naive.npz",
        dream=False,
        objective=lambda end: end.pow(2).sum(),
    )
    result = bundle.compare(exported, tmp_path / "naive.npz")
    assert result["first_failing"] == "forward/conv1/7x7_s2"
    hints = "\n".join(result["hints"])
    assert "forward/conv1/7x7_s2: yours holds the values before the ReLU" in hints
    assert "objective_diff: yours is 2 x ours" in hints
    assert result["stages"]["make_step"]["verdict"] == "ok"


@pytest.mark.slow
def test_ready_made_bundles_say_their_weights_are_synthetic(tmp_path, monkeypatch, notebook_images):
    from deepdream_caffe.lab import ready_bundles

    monkeypatch.setattr(ready_bundles, "SIZES", ((128, 72),))
    said = []
    folders = ready_bundles.make_bundles(tmp_path, say=said.append)
    names = [f.relative_to(tmp_path).as_posix() for f in folders]
    for model in ("bvlc_googlenet", "places205_googlenet"):
        meta = json.loads((tmp_path / model / "synthetic-128x72" / "bundle.json").read_text())
        assert meta["weights_kind"].startswith("synthetic: seeded random weights")
        # real-weight bundles where the weights can be had; elsewhere said, never replaced
        real = f"{model}/real-128x72" in names
        assert real != any(f"no real-weight bundles for {model}" in s for s in said)
        if real:
            meta = json.loads((tmp_path / model / "real-128x72" / "bundle.json").read_text())
            assert meta["weights_kind"].startswith("published")
