"""``deepdream-caffe draw``: the command end to end, its class names, and its refusals."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import deepdraw_file, slow_examples
from helpers import run_cli
from hypothesis import given
from hypothesis import strategies as st

from deepdream_caffe import draw, drawjob
from deepdream_caffe.errors import DreamError

# deepdraw's cell 5 schedule, shortened: a crop-free octave, then a scaled one on loss2
SHORT = [
    dict(draw.BLOG[0], iter_n=3),
    dict(draw.BLOG[2], iter_n=2),
]
GOOD = dict(SHORT[1])


def run(*args, check=True):
    """The one CLI runner (tests/helpers.py), asserting success unless ``check`` is False."""
    return run_cli(*args, check=check)


@pytest.fixture
def schedule(tmp_path):
    path = tmp_path / "short.json"
    path.write_text(json.dumps(SHORT))
    return path


@pytest.mark.caffe
def test_draw_both_nets_give_deepdraws_bits(tmp_path, draw_net, schedule):
    """--model bvlc_googlenet --weights W and --model-def <deepdraw's prototxt> --weights W
    give the same bits, and they are draw.deepdraw's (itself deepdraw's: tests/test_draw.py)."""
    from deepdream_caffe.definition import read_definition
    from deepdream_caffe.net import build

    definition, weights = draw_net
    flags = ["--seed", 4, "--schedule", schedule]
    run(
        "draw",
        954,
        "-o",
        tmp_path / "a.png",
        "--raw",
        tmp_path / "a.npy",
        "--weights",
        weights,
        *flags,
    )
    theirs = deepdraw_file("deploy_googlenet_updated.prototxt")
    run("draw", 954, "-o", tmp_path / "b.png", "--raw", tmp_path / "b.npy",
        "--model-def", theirs, "--weights", weights, *flags)  # fmt: skip
    a, b = np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy")
    np.testing.assert_array_equal(a, b)

    net = build(read_definition(definition), str(weights), None, draw.MEAN_BGR, (2, 1, 0))
    rng = np.random.RandomState(4)
    expected = draw.deepdraw(net, draw.start_image(224, 224, rng), SHORT, focus=954, rng=rng)
    np.testing.assert_array_equal(a, expected)

    side = json.loads((tmp_path / "a.png.json").read_text())
    assert side["class"]["index"] == 954 and side["seed"] == 4
    assert side["mean_bgr"] == [104.0, 117.0, 123.0] and side["command"] == "draw"
    assert side["schedule"]["octaves"] == SHORT and side["schedule"]["sha256"]
    assert "normal(200, 8" in side["start"]["deepdraw"]
    assert side["definition"]["builder"].startswith("googlenet.deepdraw_googlenet")

    # reproduce, from another folder: the same bits
    other = tmp_path / "elsewhere"
    other.mkdir()
    p = subprocess.run(
        [sys.executable, "-m", "deepdream_caffe.cli", "reproduce", tmp_path / "b.png.json"],
        capture_output=True,
        text=True,
        cwd=other,
    )
    assert p.returncode == 0 and p.stdout.strip() == "bit-identical", p.stderr


@pytest.mark.caffe
def test_draw_from_noise(tmp_path, draw_net, schedule):
    out = tmp_path / "n.png"
    flags = ["--seed", 2, "--schedule", schedule, "--weights", draw_net[1]]
    run("draw", 13, "-o", out, "--start", "noise:240x240", *flags)
    side = json.loads((tmp_path / "n.png.json").read_text())
    assert side["start"]["noise"] == "240x240"
    p = run("draw", 13, "-o", tmp_path / "m.png", "--start", "noise:300x200", *flags, check=False)
    assert p.returncode == 1 and len(p.stderr.splitlines()) == 1 and "square" in p.stderr
    assert not (tmp_path / "m.png").exists()


def synset_words(folder):
    """A list in the form of Caffe's synset_words.txt, made up (the real one is never
    committed and cannot be downloaded here): banana at 954, a junco at 13, two cranes."""
    names = {13: "junco, snowbird", 954: "banana", 134: "crane", 517: "crane"}
    lines = [f"n{i:08d} {names.get(i, f'thing {i}, other thing {i}')}" for i in range(1000)]
    path = folder / "synset_words.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_class_names_through_the_class_list(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(tmp_path))
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DreamError, match="index 0..999"):
        drawjob.resolve_class("banana")  # no list: one line that says an index works
    assert drawjob.resolve_class("954") == (954, None)  # offline, without the list
    synset_words(tmp_path)
    assert drawjob.resolve_class("banana") == (954, "banana")
    assert drawjob.resolve_class("Snowbird") == (13, "junco, snowbird")
    assert drawjob.resolve_class("n00000013")[0] == 13
    with pytest.raises(DreamError, match="134 .*517"):
        drawjob.resolve_class("crane")
    with pytest.raises(DreamError, match="did you mean banana"):
        drawjob.resolve_class("bananna")
    with pytest.raises(DreamError, match="out of range"):
        drawjob.resolve_class("1000")
    (tmp_path / "synset_words.txt").write_text("n1 banana\n")
    with pytest.raises(DreamError, match="not Caffe's synset_words"):
        drawjob.resolve_class("banana")


def octave_values():
    anything = st.one_of(
        st.none(),
        st.booleans(),
        st.text(max_size=3),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.lists(st.integers(), max_size=2),
    )
    return st.dictionaries(
        st.sampled_from([*drawjob.KEYS, "sigma", ""]), anything, min_size=0, max_size=8
    )


def refused(capsys, *args):
    """cli.main in this process: exit status and the stderr lines."""
    from deepdream_caffe import cli

    capsys.readouterr()
    try:
        status = cli.main([str(a) for a in args])
    except SystemExit as e:  # a usage error: argparse exits
        status = e.code
    return status, capsys.readouterr().err.strip().splitlines()


@slow_examples(40)
@given(octaves=st.one_of(st.lists(octave_values(), max_size=3), octave_values(), st.integers()))
def test_a_bad_schedule_is_one_line(tmp_path, capsys, draw_net, octaves):
    if isinstance(octaves, list):
        octaves = [{**GOOD, **o} for o in octaves]  # mostly good octaves with a bad value
        if octaves and all({**GOOD, **o} == o and not set(o) - set(drawjob.KEYS) for o in octaves):
            try:
                [drawjob.check_octave(o, "", "") for o in octaves]
                return  # every value happens to be fine
            except DreamError:
                pass
    path = tmp_path / "s.json"
    path.write_text(json.dumps(octaves))
    out = tmp_path / "out.png"
    status, lines = refused(
        capsys, "draw", 1, "-o", out, "--schedule", path, "--weights", draw_net[1]
    )
    assert status == 1 and len(lines) == 1, lines
    assert not out.exists() and path.read_text() == json.dumps(octaves)


@pytest.mark.parametrize(
    "args",
    [
        ["1000"],
        ["no such class"],
        ["13", "--schedule", "nope"],
        ["13", "--schedule", "missing.json"],
        ["13", "--start", "noise:"],
        ["13", "--start", "noise:100x100"],
        ["13", "--start", "noise:0x0"],
        ["13", "--model-def", "x.prototxt"],
    ],
)
def test_a_bad_class_schedule_or_start_is_one_line(tmp_path, capsys, draw_net, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(tmp_path))
    out = tmp_path / "out.png"
    status, lines = refused(capsys, "draw", *args, "-o", out, "--weights", draw_net[1])
    assert status == 1 and len(lines) == 1, lines
    assert lines[0].startswith("deepdream-caffe: error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@slow_examples(40)
@given(klass=st.text(min_size=0, max_size=12))
def test_any_class_text_is_a_class_or_one_line(tmp_path, capsys, monkeypatch, draw_net, klass):
    """Offline and without the class list: only an index 0..999 is a class."""
    if klass.strip().isascii() and klass.strip().isdigit() and int(klass) < 1000:
        return  # a class: it would draw
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(tmp_path / "none"))
    out = tmp_path / "out.png"
    status, lines = refused(capsys, "draw", klass, "-o", out, "--weights", draw_net[1])
    assert status in (1, 2) and len(lines) == 1, lines
    assert not out.exists()
