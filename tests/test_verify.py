"""verify-notebook's logic, on synthetic stand-ins (the real weights are not here).

A stand-in notebook whose image is one more seed of our own dream must pass the claim; one
whose image is something else (the undreamt input, its negative) must fail it.
"""

import base64
import io
import json

import numpy as np
import PIL.Image
import pytest
from helpers import run_cli

from deepdream_caffe import dream
from deepdream_caffe.lab import verify

pytestmark = pytest.mark.caffe
CASE = verify.NotebookCase(12, "stand-in", "inception_4c/output")
FAST = dict(iter_n=4, octave_n=2)


def fake_notebook(img_uint8, cell=12):
    buf = io.BytesIO()
    PIL.Image.fromarray(img_uint8).save(buf, "jpeg")
    cells = [{"cell_type": "markdown"}] * cell + [
        {
            "cell_type": "code",
            "outputs": [
                {"output_type": "display_data", "jpeg": base64.b64encode(buf.getvalue()).decode()}
            ],
        }
    ]
    return {"worksheets": [{"cells": cells}]}


@pytest.fixture(scope="module")
def dream_fn(nets, sky):
    from deepdream_caffe.models import IMAGENET_MEAN_BGR
    from deepdream_caffe.net import load_net

    definition, weights = nets["bvlc_googlenet"]

    def fn(case, seed):
        net = load_net(definition, weights, case.end, IMAGENET_MEAN_BGR)
        return dream.deepdream(net, sky, end=case.end, rng=np.random.RandomState(seed), **FAST)

    fn.sky = sky
    return fn


def test_the_real_notebook_images_decode(notebook_cells):
    from deepdream_caffe import assets

    notebook = json.loads(assets.fetch(assets.NOTEBOOK_ASSETS["dream.ipynb"]).read_text())
    for case in verify.CASES:
        assert verify.notebook_image(notebook, case.cell).shape == (575, 1024, 3)


def test_one_more_seed_of_ours_passes(dream_fn, tmp_path):
    notebook = fake_notebook(verify.as_notebook_saw(dream_fn(CASE, 99)))
    result = verify.run_case(CASE, dream_fn, notebook, range(3), tmp_path)
    assert result["holds"], result["verdict"]
    assert (tmp_path / "cell12.png").is_file()
    text = verify.report([result], tmp_path)
    assert "cell12.png" in text and (tmp_path / "report.json").is_file()


@pytest.mark.parametrize("other", ["undreamt", "negative"])
def test_something_else_fails(dream_fn, tmp_path, other):
    img = np.uint8(dream_fn.sky) if other == "undreamt" else 255 - np.uint8(dream_fn.sky)
    result = verify.run_case(CASE, dream_fn, fake_notebook(img), range(3), tmp_path)
    assert not result["holds"]


def test_distance_is_zero_for_the_same_image_and_grows_with_change(dream_fn):
    a = verify.as_notebook_saw(dream_fn.sky)
    assert verify.distance(a, a) == {"1-ssim": 0.0, "colour": 0.0}
    noisy = np.uint8(np.clip(a + np.random.RandomState(0).normal(0, 20, a.shape), 0, 255))
    d = verify.distance(a, noisy)
    assert d["1-ssim"] > 0.1 and d["colour"] > 1


@pytest.fixture(scope="module")
def perturbed_dream(nets, sky):
    """A dream of a perturbed model: every weight times 1 + N(0, 1), seeded."""
    from deepdream_caffe.models import IMAGENET_MEAN_BGR
    from deepdream_caffe.net import load_net

    net = load_net(*nets["bvlc_googlenet"], CASE.end, IMAGENET_MEAN_BGR)
    rng = np.random.RandomState(1000)
    for params in net.params.values():
        for p in params:
            p.data[...] *= np.float32(1 + rng.standard_normal(p.data.shape))
    return dream.deepdream(net, sky, end=CASE.end, rng=np.random.RandomState(100), **FAST)


def test_a_perturbed_model_fails(dream_fn, perturbed_dream, tmp_path):
    """Calibration (lab/verify.py): another model's dream is not one more seed of ours."""
    notebook = fake_notebook(verify.as_notebook_saw(perturbed_dream))
    result = verify.run_case(CASE, dream_fn, notebook, range(3), tmp_path)
    assert not result["holds"], result["verdict"]


def test_the_margin_is_what_lets_a_genuine_seed_pass(monkeypatch):
    """Three seeds give three distances: without the margin, a genuine seed often fails.

    The distances of a measured case (the sky at 128x72, synthetic weights, 2 octaves x 4
    steps): seeds 0, 1, 2 between them, and seed 8 to each of them."""
    between = {"colour": [0.262, 0.234, 0.283], "1-ssim": [0.079, 0.081, 0.088]}
    seed8 = {"colour": [0.345, 0.206, 0.403], "1-ssim": [0.078, 0.077, 0.084]}
    answers = iter(
        [{m: seed8[m][i] for m in seed8} for i in range(3)]
        + [{m: between[m][i] for m in between} for i in range(3)]
    )
    monkeypatch.setattr(verify, "distance", lambda a, b: next(answers))
    image = np.zeros((8, 8, 3), np.uint8)
    result = verify.judge(image, [image] * 3)
    assert result["holds"], result
    assert np.mean(seed8["colour"]) > max(between["colour"])  # the old rule failed it


def test_verify_notebook_skips_with_its_own_status(tmp_path):
    env = {
        "DEEPDREAM_CAFFE_MIRROR": str(tmp_path),
        "HTTP_PROXY": "http://127.0.0.1:9",
        "http_proxy": "http://127.0.0.1:9",
    }
    p = run_cli("verify-notebook", "--out", tmp_path / "v", env=env)
    assert p.returncode == verify.SKIPPED == 77, p.stderr
    assert "skipped (exit status 77)" in p.stderr and "Traceback" not in p.stderr


def test_every_golden_agrees_with_the_notebooks_own_cells():
    """make goldens runs the notebook's cells for each case and stores the agreement."""
    from pathlib import Path

    from deepdream_caffe.lab import goldens

    folder = Path(__file__).resolve().parents[1] / "reference_images"
    for case in goldens.CASES:
        manifest = json.loads((folder / f"{case.name}.json").read_text())
        assert manifest.get("notebook_agreement") == "bit-identical", case.name
