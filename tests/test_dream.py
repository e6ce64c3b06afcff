"""The algorithm against the notebook's own code cells, run at test time on the same nets.

Bit-identical is the bar: same net, same seed, same numpy -> the same float32 array.
"""

import numpy as np
import PIL.Image
import pytest

from deepdream_caffe import dream
from deepdream_caffe.definition import import_caffe
from deepdream_caffe.errors import DreamError
from deepdream_caffe.lab import notebook

pytestmark = pytest.mark.caffe
SEED = 7
FAST = dict(iter_n=3, octave_n=2)  # enough steps to cover jitter, octaves and detail upscaling


def notebook_namespace(cells, net=None, **names):
    """The notebook's definitions (cells 3, 6, 8) as Python 3, display stubbed out."""
    caffe = import_caffe()  # the same OpenBLAS kernel as ours, whichever test loads Caffe first

    return notebook.definitions(cells, net, PIL=PIL, caffe=caffe, **names)


def notebook_dream(cells, net, img, **kw):
    ns = notebook_namespace(cells, net)
    np.random.seed(SEED)
    return ns["deepdream"](net, img, **kw)


@pytest.mark.parametrize(
    "model,end",
    [
        ("bvlc_googlenet", "inception_4c/output"),  # cell 12
        ("bvlc_googlenet", "inception_3b/5x5_reduce"),  # cell 14: a pre-ReLU conv blob
        # the last end before the aux head loss1: past it, at sizes other than 224x224, the
        # notebook's unpruned net aborts in Caffe (tests/test_fast_net.py)
        ("places205_googlenet", "inception_4a/output"),
    ],
)
def test_deepdream_bit_identical_to_notebook(notebook_cells, load, sky, model, end):
    notebook_net = load(model, end, notebook_net=True)
    expected = notebook_dream(notebook_cells, notebook_net, sky, end=end, **FAST)
    ours = dream.deepdream(load(model, end), sky, end=end, rng=np.random.RandomState(SEED), **FAST)
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, expected)
    assert np.abs(ours - sky).max() > 1  # and it did dream


def test_notebook_defaults_bit_identical(notebook_cells, load, sky):
    """The full default dream: 4 octaves x 10 iterations at inception_4c/output."""
    expected = notebook_dream(notebook_cells, load(notebook_net=True), sky)
    ours = dream.deepdream(load(), sky, rng=np.random.RandomState(SEED))
    np.testing.assert_array_equal(ours, expected)


def test_guided_bit_identical_to_notebook(notebook_cells, load, sky, flowers):
    end = "inception_3b/output"
    net = load(end=end, notebook_net=True)
    ns = notebook_namespace(notebook_cells, net)
    objective_guide = notebook.guide_objective(notebook_cells, ns, flowers)  # cells 25, 27
    np.random.seed(SEED)
    expected = ns["deepdream"](net, sky, end=end, objective=objective_guide, **FAST)

    net = load(end=end)
    objective = dream.objective_guide(dream.guide_features(net, flowers, end))
    ours = dream.deepdream(
        net, sky, end=end, objective=objective, rng=np.random.RandomState(SEED), **FAST
    )
    np.testing.assert_array_equal(ours, expected)
    plain = dream.deepdream(load(end=end), sky, end=end, rng=np.random.RandomState(SEED), **FAST)
    assert not np.array_equal(ours, plain)  # the guide made a difference


def test_zoom_bit_identical_to_notebook(notebook_cells, load, sky):
    net = load(notebook_net=True)
    ns = notebook_namespace(notebook_cells, net)
    np.random.seed(SEED)
    saved = notebook.zoom(notebook_cells, ns, sky, frames=2, params={})  # cell 19

    params = dict(iter_n=10, octave_n=4)
    frames = [
        f
        for _, f in dream.zoom_frames(
            load(), sky, frames=2, rng=np.random.RandomState(SEED), **params
        )
    ]
    assert len(frames) == 2
    for ours, expected in zip(frames, saved, strict=True):
        np.testing.assert_array_equal(ours, expected)


def test_seeded_runs_repeat_and_seeds_differ(load, sky):
    a = dream.deepdream(load(), sky, rng=np.random.RandomState(1), **FAST)
    b = dream.deepdream(load(), sky, rng=np.random.RandomState(1), **FAST)
    c = dream.deepdream(load(), sky, rng=np.random.RandomState(2), **FAST)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_seed_equals_global_numpy_seed(load, sky):
    """--seed S is the notebook after np.random.seed(S): same stream, same order."""
    np.random.seed(3)
    a = dream.deepdream(load(), sky, **FAST)  # default rng: numpy's global, like the notebook
    b = dream.deepdream(load(), sky, rng=np.random.RandomState(3), **FAST)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("end", ["inception_4c/output", "inception_3b/5x5_reduce"])
def test_pruning_changes_no_number(load, sky, end):
    full = dream.deepdream(
        load(end=end, prune_net=False), sky, end=end, rng=np.random.RandomState(SEED), **FAST
    )
    pruned = dream.deepdream(load(end=end), sky, end=end, rng=np.random.RandomState(SEED), **FAST)
    np.testing.assert_array_equal(full, pruned)


def test_reused_net_gives_fresh_process_result(notebook_cells, load, sky):
    """Caffe leaves stale diffs in Split branches; each of our dreams starts fresh."""
    end = "inception_3b/5x5_reduce"
    fresh = dream.deepdream(load(end=end), sky, end=end, rng=np.random.RandomState(SEED), **FAST)

    net = load(end="inception_4c/output", prune_net=False)  # one net, used twice
    dream.deepdream(net, sky, rng=np.random.RandomState(0), **FAST)
    reused = dream.deepdream(net, sky, end=end, rng=np.random.RandomState(SEED), **FAST)
    np.testing.assert_array_equal(reused, fresh)

    # The notebook's own code on a reused net shows the stale state this guards against.
    net = load(end="inception_4c/output", prune_net=False)
    notebook_dream(notebook_cells, net, sky, **FAST)
    stale = notebook_dream(notebook_cells, net, sky, end=end, **FAST)
    assert not np.array_equal(stale, fresh)


def test_zero_gradient_is_a_clear_error(load, sky):
    net = load()
    with pytest.raises(DreamError, match="inception_4c/output.*zero"):
        dream.deepdream(net, sky, objective=lambda dst: dst.diff.fill(0), **FAST)


def test_preprocess_deprocess_round_trip(load, sky):
    net = load()
    np.testing.assert_allclose(dream.deprocess(net, dream.preprocess(net, sky)), sky, atol=1e-4)
    assert dream.preprocess(net, sky)[0].mean() < sky[..., 2].mean()  # BGR, mean subtracted
