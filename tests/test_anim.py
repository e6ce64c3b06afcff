"""The video loops against samim23/DeepDreamAnim's own dreamer.py, run at test time.

dreamer.py (Python 2) is read from ../shared/assets/deepdreamanim (never committed), made
Python 3 by the mechanical text fixes of :func:`py3` only, and its ``main`` runs on frames
written here, with real pycaffe building its ``caffe.Classifier`` from the files it expects
at ``../../caffe/models/bvlc_googlenet/`` (synthetic weights). Our loops must give the same
frames, bit for bit, after ``np.random.seed(S)`` once at the start.
"""

import os
import re

import numpy as np
import PIL.Image
import pytest

from deepdream_caffe import anim, dream
from tests.conftest import ROOT

pytestmark = [
    pytest.mark.caffe,
    # dreamer.py opens files without closing them (its 2015 Python 2 style)
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
DREAMER = ROOT.parent / "shared" / "assets" / "deepdreamanim" / "dreamer.py"
SEED = 3
FAST = dict(iter_n=2, octave_n=2, octave_scale=1.5)  # dreamer.py's octave scale, 2 x 2 steps
SIZE = (96, 64)


def py3(source):
    """dreamer.py's Python 2 made Python 3, mechanically: the command-line part cut, print
    statements made ``pass``, xrange, cStringIO, ``is`` with literals, Pillow's old
    ANTIALIAS name (the same Lanczos filter)."""
    source = source[: source.index("def extractVideo")]
    source = source.replace("from cStringIO import StringIO\n", "")
    source = re.sub(r"^(\s*)print .*$", r"\1pass", source, flags=re.M)
    source = source.replace("xrange", "range").replace("PIL.Image.ANTIALIAS", "PIL.Image.LANCZOS")
    return re.sub(
        r" is (not )?(\d)\b", lambda m: (" != " if m.group(1) else " == ") + m.group(2), source
    )


def dreamer():
    if not DREAMER.exists():
        pytest.skip(f"{DREAMER} is not there (../shared/assets/deepdreamanim)")
    ns = {"__name__": "dreamer"}
    exec(compile(py3(DREAMER.read_text()), str(DREAMER), "exec"), ns)
    return ns


def clip_frames(sky, count):
    """``count`` frames of a slow pan across the sky: real motion for the optical flow."""
    img = PIL.Image.fromarray(np.uint8(sky))
    w, h = SIZE
    return [
        img.resize((w + 2 * count, h + count), PIL.Image.BILINEAR).crop(
            (2 * i, i, 2 * i + w, i + h)
        )
        for i in range(count)
    ]


def run_dreamer(tmp_path, nets, frames, layers, **kw):
    """dreamer.py's main on ``frames``; its output frames by name."""
    definition, weights = nets["bvlc_googlenet"]
    models = tmp_path / "caffe" / "models" / "bvlc_googlenet"
    models.mkdir(parents=True)
    (models / "deploy.prototxt").symlink_to(definition)
    (models / "bvlc_googlenet.caffemodel").symlink_to(weights)
    inputs, outputs, cwd = tmp_path / "in", tmp_path / "out", tmp_path / "a" / "b"
    for d in (inputs, outputs, cwd):
        d.mkdir(parents=True)
    for i, f in enumerate(frames):
        f.save(inputs / f"image-{i + 1:06d}.png")
    if kw.get("guide") is not None:
        kw["guide"].save(inputs / "guide.jpg")  # not a .png: dreamer.py takes it for no frame
    ns = dreamer()
    here = os.getcwd()
    os.chdir(cwd)  # main reads ../../caffe/models and writes tmp.prototxt here
    try:
        np.random.seed(SEED)
        ns["main"](
            str(inputs),
            str(outputs),
            None,
            FAST["octave_n"],
            FAST["octave_scale"],
            FAST["iter_n"],
            None,
            None,
            None,
            kw.get("blend"),
            layers,
            "guide.jpg" if kw.get("guide") is not None else None,
            0,  # gpu: CPU
            kw.get("flow"),
        )
    finally:
        os.chdir(here)
    return {p.name: np.asarray(PIL.Image.open(p)) for p in sorted(outputs.glob("*.png"))}


def ours(load, frames, layers, flow=False, blend=0.5, deepest=None, guide=None, **kw):
    net = load(end=deepest or layers[-1], **kw)
    rng = np.random.RandomState(SEED)
    objective = dream.objective_L2
    if guide is not None:
        guide = np.float32(guide.resize((224, 224), PIL.Image.LANCZOS))
        objective = dream.objective_guide(dream.guide_features(net, guide, layers[0]))

    def dream_frame(img, end):
        return dream.deepdream(net, img, end=end, rng=rng, objective=objective, **FAST)

    read = frames.__getitem__
    if flow:
        loop = anim.flow_frames(read, len(frames), dream_frame, layers)
    else:
        loop = anim.blend_frames(read, len(frames), dream_frame, blend, layers)
    return [saved for _, saved, _ in loop]


@pytest.mark.parametrize(
    "layers,blend",
    [(["inception_3b/output"], 0.5), (["inception_3a/output", "inception_3b/output"], 0.3)],
)
def test_blend_bit_identical_to_dreamer(tmp_path, nets, load, sky, layers, blend):
    frames = clip_frames(sky, 4)
    expected = run_dreamer(tmp_path, nets, frames, layers, blend=blend)
    # dreamer.py's blend loop dreams every frame but the last, into frame_000001 ...
    assert sorted(expected) == [f"frame_{i:06d}.png" for i in range(1, 4)]
    got = ours(load, frames[:3], layers, blend=blend)
    for i, saved in enumerate(got):
        np.testing.assert_array_equal(saved, expected[f"frame_{i + 1:06d}.png"])
    assert np.abs(np.float32(got[0]) - np.float32(frames[0])).max() > 1  # it did dream


@pytest.mark.parametrize(
    "layers", [["inception_3b/output"], ["inception_3b/output", "inception_3a/output"]]
)
def test_flow_bit_identical_to_dreamer(tmp_path, nets, load, sky, layers):
    frames = clip_frames(sky, 3)
    expected = run_dreamer(tmp_path, nets, frames, layers, flow=1)
    assert sorted(expected) == [f"frame_{i:06d}.png" for i in range(3)]
    got = ours(load, frames, layers, flow=True, deepest="inception_3b/output")
    for i, saved in enumerate(got):
        np.testing.assert_array_equal(saved, expected[f"frame_{i:06d}.png"])


@pytest.mark.parametrize("flow", [False, True])
def test_a_loop_started_midway_continues_bit_for_bit(load, sky, flow):
    """Resuming: the state a frame leaves (its dream, the random state) is all the next needs."""
    frames = clip_frames(sky, 3)
    net = load(end="inception_3b/output")
    layers = ["inception_3b/output"]

    def run(first=0, previous=None, state=None):
        rng = np.random.RandomState(SEED)
        if state is not None:
            rng.set_state(state)
        out = []

        def dream_frame(img, end):
            return dream.deepdream(net, img, end=end, rng=rng, **FAST)

        loop = (
            anim.flow_frames(frames.__getitem__, 3, dream_frame, layers, first, previous)
            if flow
            else anim.blend_frames(frames.__getitem__, 3, dream_frame, 0.5, layers, first, previous)
        )
        for _v, saved, hallu in loop:
            out.append((saved, hallu if flow else saved, rng.get_state()))
        return out

    whole = run()
    rest = run(1, whole[0][1], whole[0][2])
    for (a, _, _), (b, _, _) in zip(whole[1:], rest, strict=True):
        np.testing.assert_array_equal(a, b)


def test_guided_blend_bit_identical_to_dreamer(tmp_path, nets, load, sky, flowers):
    frames = clip_frames(sky, 3)
    guide = PIL.Image.fromarray(np.uint8(flowers))
    layers = ["inception_3b/output"]
    expected = run_dreamer(tmp_path, nets, frames, layers, blend=0.5, guide=guide)
    with PIL.Image.open(tmp_path / "in" / "guide.jpg") as im:  # as dreamer.py read it
        guide = im.convert("RGB")
        guide.load()
    got = ours(load, frames[:2], layers, guide=guide)
    for i, saved in enumerate(got):
        np.testing.assert_array_equal(saved, expected[f"frame_{i + 1:06d}.png"])
