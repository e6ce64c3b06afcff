"""examples/dream.ipynb runs from top to bottom and shows the dreams it computes.

nbclient executes it in a fresh kernel on seeded synthetic weights (given through
DEEPDREAM_CAFFE_EXAMPLE_WEIGHTS, which the notebook announces) and small images (a cell after
the one tagged "parameters" overrides the sizes and steps, as papermill does).
"""

import base64
import io
from pathlib import Path

import nbformat
import numpy as np
import PIL.Image
import pytest
from nbclient import NotebookClient

from deepdream_caffe import dream, models
from deepdream_caffe.net import load_net

pytestmark = [pytest.mark.caffe, pytest.mark.slow]
NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "dream.ipynb"
FAST = {
    "SIZE": (128, 72),
    "GUIDE_SIZE": (80, 60),
    "ITER_N": 2,
    "OCTAVE_N": 2,
    "SEED": 3,
    "ZOOM_FRAMES": 2,
    "SHOW_FRAME": 1,
}


def images(cell):
    return [
        np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))))
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]


def text(cell):
    return "".join(o.get("text", "") for o in cell.get("outputs", []))


def cell_with(nb, source):
    return next(c for c in nb.cells if c.cell_type == "code" and source in c.source)


@pytest.fixture(scope="module")
def executed(nets, tmp_path_factory, notebook_images):
    folder = tmp_path_factory.mktemp("example")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(
        at + 1, nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in FAST.items()))
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPDREAM_CAFFE_EXAMPLE_WEIGHTS", str(nets["bvlc_googlenet"][1]))
        NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
        ).execute()
    return nb, folder


def test_the_stored_notebook_has_no_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert all(
        not c.get("outputs") and c.get("execution_count") is None
        for c in nb.cells
        if c.cell_type == "code"
    )


def test_it_says_which_weights_it_uses(executed):
    nb, _ = executed
    assert "not the published bvlc_googlenet weights" in text(cell_with(nb, "load_net("))


def test_the_dream_it_shows_is_the_packages_result(executed, nets, sky):
    nb, _ = executed
    (shown,) = images(cell_with(nb, "result = dream.deepdream("))
    definition, weights = nets["bvlc_googlenet"]
    record = models.get_model("bvlc_googlenet")
    net = load_net(definition, weights, None, record.mean, record.channel_swap)
    expected = dream.deepdream(net, sky, iter_n=2, octave_n=2, rng=np.random.RandomState(3))
    np.testing.assert_array_equal(shown, dream.to_uint8(expected))
    (start,) = images(cell_with(nb, 'load_image("sky1024px.jpg"'))
    np.testing.assert_array_equal(start, np.uint8(sky))
    assert not np.array_equal(shown, start)


def test_every_image_cell_shows_its_image_inline(executed):
    nb, folder = executed
    for source in (
        'end="inception_3b/5x5_reduce"',
        "Image(filename=",
        'load_image("flowers.jpg"',
        "objective=dream.objective_guide",
    ):
        cell = cell_with(nb, source)
        shown = images(cell) or [o for o in cell.outputs if "image/jpeg" in o.get("data", {})]
        assert len(shown) == 1, source
    assert sorted(p.name for p in (folder / "frames").iterdir()) == ["0000.jpg", "0001.jpg"]
    assert "'inception_4c/output'" in str(cell_with(nb, "net.blobs.keys()").outputs)
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o["output_type"] == "error"]
