"""The deepdream-caffe command end to end, in a subprocess, as users run it."""

import argparse
import contextlib
import io
import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import assert_refused, refused, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdream_caffe import dream
from deepdream_caffe.models import IMAGENET_MEAN_BGR
from deepdream_caffe.net import load_net

pytestmark = pytest.mark.caffe
FAST = ["--iter-n", "2", "--octave-n", "2"]


def run(*args, check=True):
    return run_cli(*args, check=check)


@pytest.fixture
def sky_png(tmp_path, sky):
    path = tmp_path / "sky.png"
    PIL.Image.fromarray(np.uint8(sky)).save(path)
    return path


@pytest.fixture
def byo(nets):
    definition, weights = nets["bvlc_googlenet"]
    return ["--model-def", definition, "--weights", weights]


def test_dream_writes_image_raw_and_sidecar(tmp_path, sky_png, byo, nets):
    out = tmp_path / "out.png"
    run("dream", sky_png, "-o", out, "--seed", 5, "--raw", tmp_path / "raw.npy", *byo, *FAST)
    raw = np.load(tmp_path / "raw.npy")
    assert raw.dtype == np.float32
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(out)), dream.to_uint8(raw))
    # the same computation in-process gives the same bits
    definition, weights = nets["bvlc_googlenet"]
    net = load_net(definition, weights, "inception_4c/output", IMAGENET_MEAN_BGR)
    img = np.float32(PIL.Image.open(sky_png))
    expected = dream.deepdream(net, img, iter_n=2, octave_n=2, rng=np.random.RandomState(5))
    np.testing.assert_array_equal(raw, expected)
    side = json.loads((tmp_path / "out.png.json").read_text())
    assert side["seed"] == 5 and side["params"]["iter_n"] == 2
    assert side["weights"]["sha256"] and side["environment"]["caffe_source_sha256"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "out.png",
        "out.png.json",
        "raw.npy",
        "sky.png",
    ]


def test_unseeded_run_prints_and_records_its_seed(tmp_path, sky_png, byo):
    p = run("dream", sky_png, "-o", tmp_path / "a.png", *byo, *FAST)
    seed = json.loads((tmp_path / "a.png.json").read_text())["seed"]
    assert f"--seed {seed}" in p.stderr
    run("dream", sky_png, "-o", tmp_path / "b.png", "--seed", seed, *byo, *FAST)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_guide_and_save_steps(tmp_path, sky_png, byo, flowers):
    guide = tmp_path / "flowers.png"
    PIL.Image.fromarray(np.uint8(flowers)).save(guide)
    run(
        "guide",
        sky_png,
        guide,
        "-o",
        tmp_path / "g.jpg",
        "--seed",
        1,
        "--save-steps",
        tmp_path / "steps",
        *byo,
        *FAST,
    )
    with PIL.Image.open(tmp_path / "g.jpg") as im:
        assert im.format == "JPEG"
    assert len(list((tmp_path / "steps").glob("*.png"))) == 4
    side = json.loads((tmp_path / "g.jpg.json").read_text())
    assert side["params"]["end"] == "inception_3b/output" and side["guide"]["sha256"]


def test_zoom_writes_frames(tmp_path, sky_png, byo):
    run("zoom", sky_png, "-o", tmp_path / "frames", "--frames", 2, "--seed", 1, *byo, *FAST)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        "0000.png",
        "0001.png",
        "zoom.json",
    ]


def test_layers_lists_ends_with_shapes(nets):
    out = run("layers", "--model-def", nets["bvlc_googlenet"][0], "--size", "224x224").stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("inception_4c/output "))
    assert "832x14x14" not in line and "512x14x14" in line
    assert any(
        ln.startswith("inception_3b/5x5_reduce") and ln.rstrip().endswith("*")
        for ln in out.splitlines()
    )


def test_info_prints_the_verified_source_sha256():
    out = run("info").stdout
    assert "e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c" in out
    assert "blas_threads" in out


def test_missing_weights_is_one_clear_line(tmp_path, sky_png, monkeypatch):
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(tmp_path))  # no weights there
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # and no network, wherever this runs
    monkeypatch.setenv("http_proxy", "http://127.0.0.1:9")
    refused(
        "dream",
        sky_png,
        "-o",
        tmp_path / "x.png",
        words=["bvlc_googlenet.caffemodel", "DEEPDREAM_CAFFE_MIRROR"],
        watch=[tmp_path],
        codes=(1,),
    )


def test_output_equal_to_input_is_refused(sky_png, byo):
    refused("dream", sky_png, "-o", sky_png, *byo, words=["is the input"], watch=[sky_png.parent])


def test_unknown_layer_suggests_names(tmp_path, sky_png, byo):
    refused(
        "dream",
        sky_png,
        "-o",
        tmp_path / "x.png",
        "--end",
        "inception_4c/outptu",
        *byo,
        words=["inception_4c/output"],
        watch=[tmp_path],
        codes=(1,),
    )


# --- flags and help --------------------------------------------------------------------
def subcommands():
    from deepdream_caffe.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, action.choices


def test_version_is_the_installed_package_version():
    version = metadata.version("deepdream_caffe")
    assert run("--version").stdout.strip() == f"deepdream-caffe {version}"


@pytest.mark.parametrize("command", ["", *subcommands()[1]])
def test_help_shows_each_default_once_as_typed(command):
    text = run(*([command] if command else []), "--help").stdout
    options = re.split(r"\n  (?=-)", text)  # one chunk per option
    for option in options:
        assert option.count("default") <= 1, option
        assert not re.search(r"default: (\(|\[|True|False|None)", option), option
    if command == "layers":
        assert "(default: 1024x575)" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["--debug", "--verbose", "info"],
        ["info", "--debug", "--verbose"],
        ["--debug", "dream", "in.png", "-o", "x.png", "--verbose"],
        ["dream", "in.png", "-o", "x.png", "--debug", "--verbose"],
        ["--verbose", "layers", "--debug"],
    ],
)
def test_debug_and_verbose_before_or_after_the_subcommand(argv):
    args = subcommands()[0].parse_args(argv)
    assert args.debug and args.verbose
    quiet = subcommands()[0].parse_args([a for a in argv if a not in ("--debug", "--verbose")])
    assert not quiet.debug and not quiet.verbose


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    missing = tmp_path / "missing.png"
    refused("dream", missing, "-o", tmp_path / "x.png", watch=[tmp_path], codes=(1,))
    debug = run("dream", missing, "-o", tmp_path / "x.png", "--debug", check=False)
    assert "Traceback" in debug.stderr and "DreamError" in debug.stderr


@pytest.mark.parametrize("command", ["verify-notebook", "bench"])
@pytest.mark.parametrize("flag", ["-o", "--output", "--out"])
def test_one_output_flag_and_the_old_spelling_still_works(command, flag):
    parser, choices = subcommands()
    assert parser.parse_args([command, flag, "somewhere"]).output == Path("somewhere")
    assert parser.parse_args([command]).output == Path("out", command)  # the default holds
    assert "--out " not in choices[command].format_help()  # the alias is hidden


@pytest.mark.parametrize(
    "flag", ["--weights", "--mean", "--gpu", "--notebook-net", "--channel-swap", "--places-mean"]
)
def test_layers_refuses_flags_it_would_ignore(flag, nets):
    value = [] if flag in ("--notebook-net", "--places-mean") else ["1"]
    p = run("layers", "--model-def", nets["bvlc_googlenet"][0], flag, *value, check=False)
    assert_refused(p, f"layers does not use {flag}", codes=(2,))
    assert not p.stdout


@pytest.mark.parametrize(
    "model",
    [["--model", "bvlc_googlenet"], [], ["--model-def", "x.prototxt", "--weights", "x.caffemodel"]],
)
def test_places_mean_needs_places205(tmp_path, model):
    refused(
        "dream",
        tmp_path / "in.png",
        "-o",
        tmp_path / "x.png",
        "--places-mean",
        *model,
        words=["--places-mean needs --model places205_googlenet"],
        watch=[tmp_path],
        codes=(2,),
    )
    assert not list(tmp_path.iterdir())
    subcommands()[0].parse_args(
        ["dream", "in.png", "-o", "x.png", "--places-mean", "--model", "places205_googlenet"]
    )  # accepted


def test_info_json():
    info = json.loads(run("info", "--json").stdout)
    assert info["caffe_source_sha256"].startswith("e0eb3f06") and "blas_threads" in info


@pytest.mark.parametrize("flags", [[], ["--json"]])
def test_info_without_pycaffe_says_what_is_missing(flags):
    code = (
        "import sys; sys.modules['caffe'] = None; from deepdream_caffe.cli import main; "
        f"sys.exit(main(['info', *{flags!r}]))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "pycaffe is not installed" in p.stdout and "make setup" in p.stdout
    assert "numpy" in p.stdout and "caffe_source_sha256" not in p.stdout


@settings(max_examples=60, deadline=None)
@given(fps=st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(max_size=8)))
def test_fps_is_a_positive_finite_number_or_a_usage_error(fps):
    parser = subcommands()[0]
    argv = ["zoom", "in.png", "-o", "frames", f"--fps={fps}"]
    try:
        value = float(fps)
    except ValueError:
        value = None
    from deepdream_caffe.params import in_range

    if value is not None and np.isfinite(value) and value > 0 and in_range("fps", value):
        assert parser.parse_args(argv).fps == value
    else:
        with pytest.raises(SystemExit) as exit_:
            with contextlib.redirect_stderr(io.StringIO()):
                parser.parse_args(argv)
        assert exit_.value.code == 2


@settings(max_examples=40, deadline=None)
@given(
    units=st.sampled_from(
        [
            [["info"]],
            [["layers"]],
            [["fetch"], ["models"]],
            [["dream"], ["in.png"], ["-o", "x.png"]],
            [["bench"], ["--quick"]],
        ]
    ),
    debug=st.booleans(),
    verbose=st.booleans(),
    data=st.data(),
)
def test_general_flags_anywhere(units, debug, verbose, data):
    """--debug and --verbose between any two words: before the subcommand or after it."""
    units = list(units)
    for flag in ["--debug"] * debug + ["--verbose"] * verbose:
        units.insert(data.draw(st.integers(0, len(units))), [flag])
    argv = [word for unit in units for word in unit]
    args = subcommands()[0].parse_args(argv)
    command = next(u[0] for u in units if not u[0].startswith("--"))
    assert (args.debug, args.verbose, args.command) == (debug, verbose, command)
