"""The default net set-up (data gradient only) against the notebook's (force_backward).

The rewrite must change no bit for any end layer the CLI offers, on both architectures, for
the L2 and the guided objective; it must really skip the weight gradients; and
``--notebook-net`` must be the net the notebook's own cells build, bit for bit.
Other topologies: tests/test_topologies.py.
"""

import numpy as np
import pytest
from helpers import Snapshot, assert_refused, main_in_process

from deepdream_caffe import dream, fastnet
from deepdream_caffe.definition import dream_layers, import_caffe, prune, read_definition
from deepdream_caffe.shapes import declared_input

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


@pytest.mark.parametrize(
    "end", ["inception_3b/output", "inception_4c/output", "inception_4d/3x3_reduce"]
)
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
    assert net.dream_setup.startswith(
        "data gradient only, pruned to inception_3b/output; "
        "bit-identical to the notebook (force_backward), every "
        "layer up to inception_3b/output at a "
    )
    side = int(net.dream_setup.split(" at a ")[1].split("x")[0])
    assert 16 <= side < 224
    assert load(end="prob").dream_setup.endswith("at a 224x224 check")  # fully connected


@pytest.mark.parametrize("model", ["bvlc_googlenet", "places205_googlenet"])
def test_a_fast_net_built_for_the_dream_s_size_is_bit_identical(nets, load, img, model):
    """Built for the largest image it will get (the declared 10x3x224x224 would make its
    blobs 3.4 times those of a 512x288 dream), at every end whose layers' sizes are modelled;
    at its declared size at the others (a fully connected layer's weights fit no other)."""
    built_for = (250, 231)  # neither the size of the steps, nor the declared one
    declared = declared_input(read_definition(nets[model][0]))
    resized = 0
    for end in all_ends(nets, model)[::7] + ["inception_4c/output", "prob"]:
        fast, notebook = load(model, end, size=built_for), load(model, end, notebook_net=True)
        assert fast.dream_setup.startswith("data gradient only"), end
        shape = fast.blobs["data"].data.shape
        if shape == (1, 3, *built_for):
            resized += 1
        else:
            assert shape == declared, (end, shape)
        assert np.array_equal(two_steps(fast, img, end), two_steps(notebook, img, end)), end
    assert resized >= 5


def test_what_cannot_be_built_at_another_size_is_left_as_declared(nets):
    model = read_definition(nets["bvlc_googlenet"][0])
    assert fastnet.built_at(model, (100, 120)) is model  # loss3/classifier: fully connected
    pruned = prune(model, "inception_4c/output")
    sized = fastnet.built_at(pruned, (100, 120))
    assert sized is not pruned and sized.layer[0].input_param.shape[0].dim == [1, 3, 100, 120]
    assert pruned.layer[0].input_param.shape[0].dim == [10, 3, 224, 224]  # a copy was changed
    shared = type(pruned)()
    shared.CopyFrom(pruned)
    shared.layer[0].top.append("other")  # one shape for two tops: both would change
    assert fastnet.built_at(shared, (100, 120)) is shared


def dream_here(tmp_path, img, *flags):
    """``deepdream-caffe dream`` in this process (tests/helpers.py); returns (the finished
    command, the --raw result)."""
    import PIL.Image

    PIL.Image.fromarray(np.uint8(img)).save(tmp_path / "in.png")
    out = tmp_path / "out.png"
    before = Snapshot(tmp_path)
    p = main_in_process(
        "dream", tmp_path / "in.png", "-o", out, "--raw", tmp_path / "out.npy", "--seed", 7, *flags
    )
    p.before = before
    return p, (np.load(tmp_path / "out.npy") if p.returncode == 0 else None)


# inception_4a/output is the last end before the aux head loss1, at a size other than 224x224;
# inception_4c/output runs loss1 forward and backward, which the notebook can do at 224x224 only
@pytest.mark.parametrize(
    "end,size,octave_n",
    [("inception_4a/output", (72, 128), 2), ("inception_4c/output", (224, 224), 1)],
)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # cell 3 leaves
def test_notebook_net_is_the_notebooks_own(
    notebook_cells, nets, sky, tmp_path, monkeypatch, end, size, octave_n
):
    """--notebook-net against dream.ipynb's cells 3, 6 and 8, run as they are, on the unpruned
    Places205 architecture (aux heads kept): the same bits.

    Cell 3 itself builds the net (force_backward, tmp.prototxt, the Classifier). The aux heads
    must keep the shapes they were built with: the notebook never reshaped them.
    """
    import PIL.Image
    from google.protobuf import text_format
    from test_dream import SEED

    from deepdream_caffe.lab.notebook import run_cells

    definition, weights = nets["places205_googlenet"]
    img = np.float32(PIL.Image.fromarray(np.uint8(sky)).resize(size[::-1], PIL.Image.BILINEAR))
    done, ours = dream_here(
        tmp_path,
        img,
        "--notebook-net",
        "--model-def",
        definition,
        "--weights",
        weights,
        "--end",
        end,
        "--iter-n",
        3,
        "--octave-n",
        octave_n,
    )
    assert done.returncode == 0, done.stderr

    cell3 = notebook_cells[3]
    for name, path in (("'deploy.prototxt'", definition), ("'bvlc_googlenet.caffemodel'", weights)):
        assert "model_path + " + name in cell3
        cell3 = cell3.replace("model_path + " + name, repr(str(path)))
    monkeypatch.chdir(tmp_path)  # cell 3 writes tmp.prototxt here
    ns = run_cells(
        (cell3, notebook_cells[6], notebook_cells[8]),
        caffe=import_caffe(),  # the same OpenBLAS kernel as ours
        text_format=text_format,
    )
    net = ns["net"]
    assert "loss1/fc" in net._layer_names and "loss2/classifier" in net._layer_names
    aux = {name: net.blobs[name].data.shape for name in net.blobs if name.startswith("loss")}
    np.random.seed(SEED)
    expected = ns["deepdream"](
        net, np.float32(PIL.Image.open("in.png")), end=end, iter_n=3, octave_n=octave_n
    )  # the image as the notebook's cell 10 reads it
    assert {name: net.blobs[name].data.shape for name in aux} == aux  # never reshaped
    np.testing.assert_array_equal(ours, expected)
    assert np.abs(ours - img).max() > 1


def test_notebook_net_refuses_what_aborts_the_notebook(nets, sky, tmp_path, capsys):
    """Past an aux head at a size other than 224x224 the notebook's net aborts in Caffe
    (loss1/fc takes one size only): --notebook-net says so in one line; the default dreams."""
    definition, weights = nets["places205_googlenet"]
    flags = [
        "--model-def",
        definition,
        "--weights",
        weights,
        "--end",
        "inception_4c/output",
        "--iter-n",
        1,
        "--octave-n",
        2,
    ]
    done, _ = dream_here(tmp_path, sky, "--notebook-net", *flags)
    assert_refused(done, "loss1/fc", "leave out --notebook-net", before=done.before, codes=(1,))
    assert dream_here(tmp_path, sky, *flags)[0].returncode == 0
