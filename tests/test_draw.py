"""draw against deepdraw's own notebook cells, run at test time on the same Caffe and net.

Bit-identical is the bar, as for dream.ipynb (tests/test_dream.py): deepdraw's cells 1, 3 and
5 executed as Python 3 after ``np.random.seed(S)``, on deepdraw's own prototxt built the way
its cell 1 builds it, against :mod:`deepdream_caffe.draw` on the builder's net.
"""

import re

import numpy as np
import pytest
import scipy.ndimage as nd
from conftest import deepdraw_file

from deepdream_caffe import draw

pytestmark = pytest.mark.caffe
SEED = 5
# cell 5's four octaves (both scales, all three classifiers), a few steps each
STEPS = {"190": 3, "150": 2, "10": 2}


def py3(source):
    """deepdraw's Python 2 and numpy 1 idioms, as the README of its mirror lists them:
    xrange, print statements (a ``pass`` keeps their blocks), ``int()`` of a one-element array
    (numpy 2 refuses it: take the element), and ``nd.filters`` (deprecated; the same function).
    """
    lines = []
    for line in source.replace("xrange", "range").splitlines():
        if line.strip().startswith("print "):
            line = line[: len(line) - len(line.lstrip())] + "pass"
        lines.append(line)
    source = "\n".join(lines).replace("nd.filters.gaussian_filter", "nd.gaussian_filter")
    return re.sub(
        r"int\(np\.clip\((o[xy]),0,(im[wh])-([wh])\)\)", r"int(np.clip(\1,0,\2-\3)[0])", source
    )


def short(cell5):
    """Cell 5 with fewer steps per octave: the same schedule otherwise."""
    for old, new in STEPS.items():
        cell5 = cell5.replace(f"'iter_n':{old},", f"'iter_n':{new},")
    return cell5


def deepdraw_namespace(cells, weights):
    """deepdraw's net built as its cell 1 builds it (its own prototxt, from the shared
    assets), and its definitions of cells 1 and 3, display stubbed out."""
    from deepdream_caffe.definition import import_caffe

    caffe = import_caffe()

    cell1 = cells[1]
    ns = dict(
        np=np,
        nd=nd,
        caffe=caffe,
        net_fn=str(deepdraw_file("deploy_googlenet_updated.prototxt")),
        param_fn=str(weights),
    )
    caffe.set_mode_cpu()
    loading = cell1[cell1.index("mean = ") : cell1.index("# a couple")]
    exec(py3(loading), ns)
    exec(py3(cell1[cell1.index("def preprocess") :]), ns)
    exec(py3(cells[3]), ns)
    ns["showarray"] = lambda *a, **k: None
    return ns


def our_net(draw_net):
    from deepdream_caffe.definition import read_definition
    from deepdream_caffe.net import build

    definition, weights = draw_net
    return build(read_definition(definition), str(weights), None, draw.MEAN_BGR, (2, 1, 0))


def test_schedules_are_deepdraws_cells(deepdraw_cells):
    ns = {}
    exec(deepdraw_cells[5][: deepdraw_cells[5].index("# get original")], ns)
    assert [dict(o) for o in draw.BLOG] == ns["octaves"]
    exec(deepdraw_cells[7][: deepdraw_cells[7].index("imagenet_class")], ns)
    assert [dict(o) for o in draw.COHERENT] == ns["octaves"]
    assert "mean = np.float32([104.0, 117.0, 123.0])" in deepdraw_cells[1]
    assert "imagenet_class = 13\n" in deepdraw_cells[5]


def test_draw_bit_identical_to_deepdraw(deepdraw_cells, draw_net):
    ns = deepdraw_namespace(deepdraw_cells, draw_net[1])
    cell5 = short(deepdraw_cells[5])
    np.random.seed(SEED)
    exec(py3(cell5), ns)
    expected = ns["gen_image"]
    octaves = ns["octaves"]
    assert [o["iter_n"] for o in octaves] == [3, 2, 2, 2]

    rng = np.random.RandomState(SEED)
    steps = []
    ours = draw.deepdraw(
        our_net(draw_net),
        draw.start_image(224, 224, rng),
        octaves,
        focus=draw.CLASS,
        rng=rng,
        callback=lambda e, i, net: steps.append((e, i)),
    )
    assert ours.dtype == expected.dtype == np.float32
    assert ours.shape == expected.shape == (323, 323, 3) == (*draw.sizes(octaves)[-1:] * 2, 3)
    np.testing.assert_array_equal(ours, expected)
    assert len(steps) == 9


def test_the_class_score_rises(draw_net):
    net = our_net(draw_net)
    rng = np.random.RandomState(SEED)
    start = draw.start_image(224, 224, rng)
    octaves = [dict(draw.BLOG[0], iter_n=4)]
    result = draw.deepdraw(net, start, octaves, focus=954, rng=rng)

    def score(img):
        net.blobs["data"].data[0] = draw.preprocess(net, img)
        net.forward(end="loss3/classifier")
        return float(net.blobs["loss3/classifier"].data[0, 954])

    assert score(result) > score(start)


def test_blur_only_for_a_positive_sigma():
    img = np.random.RandomState(0).uniform(size=(3, 8, 8)).astype(np.float32)
    assert draw.blur(img.copy(), 0) is not None
    np.testing.assert_array_equal(draw.blur(img.copy(), 0), img)
    assert not np.array_equal(draw.blur(img.copy(), 0.5), img)
