"""The default net set-up (data gradient only) against the notebook's (force_backward).

The rewrite must change no bit for any end layer the CLI offers, on both architectures, for
the L2 and the guided objective; and it must really skip the weight gradients.
"""

import numpy as np
import pytest

from deepdream_caffe import dream, fastnet
from deepdream_caffe.net import dream_layers, read_definition

pytestmark = [pytest.mark.caffe, pytest.mark.slow]
SIZE = (224, 224)  # the size every end accepts, the classifier layers included


def all_ends(nets, model):
    return [info.name for info in dream_layers(read_definition(nets[model][0]))]


def two_steps(net, img, end, objective=dream.objective_L2):
    """Two make_steps at SIZE, as the first steps of a dream take them."""
    src = net.blobs["data"]
    src.reshape(1, 3, *SIZE)
    src.data[0] = dream.preprocess(net, img)
    rng = np.random.RandomState(4)
    for _ in range(2):
        dream.make_step(net, end=end, objective=objective, rng=rng)
    return src.data[0].copy()


@pytest.fixture(scope="module")
def img():
    return np.random.RandomState(0).uniform(0, 255, SIZE + (3,)).astype(np.float32)


@pytest.mark.parametrize("model", ["bvlc_googlenet", "places205_googlenet"])
def test_every_end_is_bit_identical(nets, load, img, model):
    ends = all_ends(nets, model)
    assert len(ends) > 60 and "inception_3b/5x5_reduce" in ends and "prob" in ends
    for end in ends:
        fast, notebook = load(model, end), load(model, end, notebook_net=True)
        assert fast.dream_setup.startswith("data gradient only"), end
        assert notebook.dream_setup.startswith("notebook"), end
        ours, expected = two_steps(fast, img, end), two_steps(notebook, img, end)
        assert np.array_equal(ours, expected), end


@pytest.mark.parametrize("end", ["inception_3b/output", "inception_4c/output",
                                 "inception_4d/3x3_reduce"])
def test_guided_objective_is_bit_identical(load, img, flowers, end):
    results = []
    for notebook_net in (False, True):
        net = load(end=end, notebook_net=notebook_net)
        objective = dream.objective_guide(dream.guide_features(net, flowers, end))
        results.append(two_steps(net, img, end, objective))
    assert np.array_equal(*results)


def test_weight_gradients_are_skipped(load, img):
    fast, notebook = load(), load(notebook_net=True)
    two_steps(fast, img, "inception_4c/output")
    two_steps(notebook, img, "inception_4c/output")
    learned = {name for name, p in fast.params.items() if np.abs(p[0].diff).max() > 0}
    assert learned == {fastnet.SWITCH}  # not one weight gradient of the net's own computed
    before_end = set(fast.params) - {fastnet.SWITCH}
    assert len(before_end) > 30  # conv1 .. inception_4c
    assert all(np.abs(notebook.params[name][0].diff).max() > 0 for name in before_end)


def test_the_check_runs_small(load):
    """The check before use runs at the smallest size the pruned net takes (not 224x224)."""
    net = load(end="inception_3b/output")
    assert net.dream_setup.startswith("data gradient only, pruned to inception_3b/output; "
                                      "bit-identical to the notebook net at a ")
    side = int(net.dream_setup.split(" at a ")[1].split("x")[0])
    assert 16 <= side < 224
    assert load(end="prob").dream_setup.endswith("at a 224x224 check")  # fully connected
