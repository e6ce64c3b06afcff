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

from deepdream_caffe import dream
from deepdream_caffe.lab import verify

pytestmark = pytest.mark.caffe
CASE = verify.NotebookCase(12, "stand-in", "inception_4c/output")
FAST = dict(iter_n=4, octave_n=2)


def fake_notebook(img_uint8, cell=12):
    buf = io.BytesIO()
    PIL.Image.fromarray(img_uint8).save(buf, "jpeg")
    cells = [{"cell_type": "markdown"}] * cell + [{"cell_type": "code", "outputs": [
        {"output_type": "display_data", "jpeg": base64.b64encode(buf.getvalue()).decode()}]}]
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
