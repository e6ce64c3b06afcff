"""Hostile input (issue 10): what a user can type, hand over or do, against the real command.

The contract for every refusal (tests/helpers.py): exit 1 (or 2 for a flag that makes no
sense), exactly one line on stderr, no traceback, nothing written, no input or mirror file
changed, no temporary file left. Commands run in a subprocess (``python -m
deepdream_caffe.cli``), so that a Caffe abort shows as what it is (exit 134). Property-based
tests generate what users type; the named cases below each failed before the fixes they test.
"""

import contextlib
import io
import json
import os
import signal
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import slow_examples
from helpers import CLI, Snapshot, assert_refused, main_in_process, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdream_caffe import assets, cli, imageio, job, params
from deepdream_caffe.errors import DreamError

pytestmark = pytest.mark.caffe
FAST = ["--iter-n", "1", "--octave-n", "2", "--seed", "1"]
# What users type into number flags, beside what hypothesis makes up.
TYPED = [
    "nan",
    "NaN",
    "inf",
    "-inf",
    "infinity",
    "1e39",
    "-1e39",
    "1e308",
    "1e400",
    "2**64",
    "18446744073709551616",
    "4294967296",
    "1e20",
    "-0",
    "-0.0",
    "0x10",
    " 5",
    "5,",
    "5 ",
    "",
    "--",
    "1_000",
    "0",
    "-1",
    "1.5",
    "3.4028236e38",
    "99999999999999999999999",
    "½",
    "٣",
]
NUMBER_FLAGS = {  # flag: (subcommand, name in params.LIMITS)
    "--iter-n": ("dream", "iter_n"),
    "--octave-n": ("dream", "octave_n"),
    "--octave-scale": ("dream", "octave_scale"),
    "--step-size": ("dream", "step_size"),
    "--jitter": ("dream", "jitter"),
    "--seed": ("dream", "seed"),
    "--max-size": ("dream", "max_size"),
    "--jpeg-quality": ("dream", "jpeg_quality"),
    "--gpu": ("dream", "gpu"),
    "--frames": ("zoom", "frames"),
    "--scale": ("zoom", "scale"),
    "--tile": ("dream", "tile"),
    "--blend": ("video", "blend"),
    "--fps": ("video", "fps"),
}
typed = st.one_of(
    st.sampled_from(TYPED),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
    st.text(alphabet="0123456789.,-+eExXinfa_ *", max_size=10),
)


# --- the contract --------------------------------------------------------------------------
@pytest.fixture
def work(tmp_path, sky, nets):
    """A folder with an input image, a private TMPDIR, and the synthetic bvlc_googlenet."""
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    (tmp_path / "tmp").mkdir()
    definition, weights = nets["bvlc_googlenet"]
    return tmp_path, ["--model-def", str(definition), "--weights", str(weights)]


def argv(command, image, out, *rest):
    """``COMMAND IMAGE -o OUT`` then ``rest``."""
    return [command, image, "-o", out, *rest]


def dream_argv(folder, *rest, out="o.png"):
    """``dream`` from the folder's in.png to its ``out``, then ``rest``."""
    return argv("dream", folder / "in.png", folder / out, *rest)


def run(folder, *args, env=None, umask=None):
    """The command with the folder's private TMPDIR (a temporary file left there shows)."""
    return run_cli(*args, env={"TMPDIR": str(folder / "tmp"), **(env or {})}, umask=umask)


def mirrors():
    return os.environ["DEEPDREAM_CAFFE_MIRROR"].split(os.pathsep)


def refused(work, *args, codes=(1, 2), words=(), env=None, model=True):
    """Run the command; assert the whole contract of a refusal; return its one line."""
    folder, flags = work
    before = Snapshot(folder, *mirrors())
    p = run(folder, *args, *(flags if model else []), env=env)
    return contract(p, before, codes, words)


def contract(p, before, codes=(1, 2), words=()):
    """The refusal contract (tests/helpers.py) over the work folder and the mirrors; the
    private TMPDIR in the work folder is left empty, not even a folder in it."""
    line = assert_refused(p, *words, before=before, codes=codes)
    assert not list((before.folders[0] / "tmp").iterdir())  # no temporary file left behind
    return line


# --- numbers -------------------------------------------------------------------------------
def parse(argv):
    """The CLI's parser on ``argv``: (args, stderr); a usage error's SystemExit carries
    what it wrote as ``.stderr``."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return cli.build_parser().parse_args(argv), err.getvalue()
    except SystemExit as e:
        e.stderr = err.getvalue()
        raise


@settings(max_examples=300, deadline=None)
@given(flag=st.sampled_from(sorted(NUMBER_FLAGS)), value=typed)
def test_any_typed_number_parses_into_range_or_is_one_usage_line(flag, value):
    """Every value either parses to a finite number within params.LIMITS, which a job accepts,
    or is a usage error of one line."""
    command, name = NUMBER_FLAGS[flag]
    try:
        args, err = parse([command, "in.png", "-o", "o.png", f"{flag}={value}"])
    except SystemExit as e:
        err = e.stderr
        assert e.code == 2 and len(err.strip().splitlines()) == 1, err
        assert "invalid parse value" not in err and f"argument {flag}" in err
        return
    v = getattr(args, name)
    assert np.isfinite(v) and params.in_range(name, v)
    job.check_numbers(job.Job.from_values(args))  # the job takes it as it is


@settings(max_examples=150, deadline=None)
@given(parts=st.lists(typed, min_size=1, max_size=4))
def test_any_typed_mean_is_three_values_in_0_255_or_one_usage_line(parts):
    text = ",".join(parts)
    try:
        args, _ = parse(["dream", "in.png", "-o", "o.png", f"--mean={text}"])
    except SystemExit as e:
        err = e.stderr
        assert e.code == 2 and len(err.strip().splitlines()) == 1, err
        return
    assert len(args.mean) == 3 and all(np.isfinite(m) and 0 <= m <= 255 for m in args.mean)


@slow_examples(12)
@given(
    flag=st.sampled_from(
        [
            "--mean",
            "--step-size",
            "--octave-scale",
            "--jitter",
            "--octave-n",
            "--seed",
            "--jpeg-quality",
        ]
    ),
    value=st.sampled_from(
        [
            "nan",
            "inf",
            "-inf",
            "1e39",
            "2**64",
            "1e20",
            "-0",
            "0x10",
            "5,",
            "-1",
            "1e400",
            "nan,0,0",
            "0,inf,0",
            "1e39,0,0",
            "-1,0,0",
            "256,0,0",
        ]
    ),
)
def test_hostile_numbers_through_the_command(work, flag, value):
    """Through the real command: a clean refusal, or a dream (never an abort, exit 134)."""
    folder, flags = work
    for f in folder.glob("o.png*"):
        f.unlink()
    before = Snapshot(folder, *mirrors())
    p = run(
        folder, "dream", folder / "in.png", "-o", folder / "o.png", *FAST, *flags, f"{flag}={value}"
    )
    if p.returncode != 0:
        contract(p, before)
    else:
        assert "Traceback" not in p.stderr and "Warning" not in p.stderr
        assert (folder / "o.png").is_file()


@pytest.mark.parametrize("mean", ["nan,0,0", "inf,0,0", "1e39,0,0", "0,0,-inf"])
def test_non_finite_mean_is_refused_before_caffe(work, mean):
    """Before: 'gradient not finite', then glibc's 'free(): invalid next size', exit 134."""
    folder = work[0]
    refused(work, *dream_argv(folder, *FAST, "--mean", mean), codes=(2,), words=["--mean"])


@pytest.mark.parametrize("command", ["dream", "zoom"])
def test_no_clip_with_a_huge_step_stops_before_the_heap_breaks(work, command):
    """Before: the image overflowed, max pooling met NaN, exit 134 (double free)."""
    folder = work[0]
    out = folder / ("o.png" if command == "dream" else "frames")
    extra = ["--frames", "2"] if command == "zoom" else []
    refused(
        work,
        *argv(command, folder / "in.png", out, *FAST, *extra, "--no-clip", "--step-size", "1e30"),
        codes=(1,),
        words=["float range", "--step-size"],
    )


def test_a_huge_clipped_step_runs_without_warnings(work):
    folder, flags = work
    p = run(
        folder,
        *dream_argv(folder, *FAST, *flags, "--step-size", "1e38"),
    )
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 0 and lines[0].startswith("wrote"), p.stderr
    assert len(lines) == 1, p.stderr


def test_weights_holding_nan_are_refused(work, tmp_path_factory):
    folder, flags = work
    from deepdream_caffe.definition import import_caffe

    caffe = import_caffe()
    net = caffe.Net(flags[1], flags[3], caffe.TEST)
    net.params["conv2/3x3"][0].data[0, 0, 0, 0] = np.nan
    bad = tmp_path_factory.mktemp("w") / "nan.caffemodel"
    net.save(str(bad))
    refused(
        (folder, [flags[0], flags[1], "--weights", bad]),
        *dream_argv(folder, *FAST),
        codes=(1,),
        words=["conv2/3x3", "NaN"],
    )


def test_guard_sees_a_nan_in_a_pooled_blob(load, nets):
    from deepdream_caffe import dream, guards
    from deepdream_caffe.definition import dream_model

    net = load(end="inception_3a/output")
    pooled = guards.max_pool_inputs(dream_model(nets["bvlc_googlenet"][0], "inception_3a/output"))
    img = np.full((64, 64, 3), 100, np.float32)
    net.blobs["data"].reshape(1, 3, 64, 64)
    net.blobs["data"].data[0] = dream.preprocess(net, img)
    net.forward(end="inception_3a/output")
    guards.check_forward(net, pooled, "inception_3a/output")  # a normal pass goes through
    net.blobs["conv2/norm2"].data[0, 0] = np.nan
    with pytest.raises(DreamError, match="conv2/norm2"):
        guards.guarded(net, dream.objective_L2, pooled, "x")(net.blobs["inception_3a/output"])


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e6])
def test_a_preprocessed_image_out_of_range_is_refused(bad):
    """What reaches Caffe is checked itself, not only the flags that made it."""
    from deepdream_caffe import guards

    image = np.zeros((3, 8, 8), np.float32)
    guards.check_input(image - 120, "in.png")  # a grey image minus a mean: fine
    image[1, 2, 3] = bad
    with pytest.raises(DreamError, match="in.png"):
        guards.check_input(image, "in.png")


def test_max_pool_inputs_of_googlenet(nets):
    from deepdream_caffe import guards
    from deepdream_caffe.definition import dream_model

    names = guards.max_pool_inputs(dream_model(nets["bvlc_googlenet"][0], "inception_4c/output"))
    assert names[:2] == ["conv1/7x7_s2", "conv2/norm2"]
    assert "inception_3b/output" in names and "inception_4b/output" in names


@pytest.mark.parametrize("seed", ["4294967296", "-1", "1e3"])
def test_seed_outside_randomstate_range(work, seed):
    """Before: a numpy ValueError traceback for 4294967296."""
    folder = work[0]
    refused(work, *dream_argv(folder, f"--seed={seed}"), codes=(2,), words=["--seed"])


@pytest.mark.parametrize("value", ["2**64", "1e20", "18446744073709551616"])
def test_huge_integers_get_a_message_not_invalid_parse_value(work, value):
    folder = work[0]
    line = refused(work, *dream_argv(folder, f"--jitter={value}"), codes=(2,), words=["--jitter"])
    assert "is not an integer" in line or "must be at most" in line


def test_jpeg_quality_is_held_to_the_help(work):
    folder = work[0]
    refused(
        work, *dream_argv(folder, "--jpeg-quality", "200", out="o.jpg"), codes=(2,), words=["1..95"]
    )


def test_octave_count_beyond_the_image(work):
    """Before: listing a billion octave sizes, for minutes."""
    folder = work[0]
    refused(
        work,
        *dream_argv(folder, "--seed", "1", "--octave-n", "1000000000"),
        codes=(1,),
        words=["--octave-n"],
    )


def test_job_from_another_caller_is_held_to_the_ranges(tmp_path):
    for bad in (
        {"seed": 2**32},
        {"mean": (float("nan"), 0, 0)},
        {"jpeg_quality": 200},
        {"step_size": float("inf")},
        {"channel_swap": (0, 0, 1)},
    ):
        with pytest.raises(DreamError):
            job.check_numbers(job.Job.from_values(bad))


# --- images --------------------------------------------------------------------------------
def save_mode(path, mode, values):
    """An image of ``mode`` from a float array ``values`` (H x W)."""
    if mode == "F":
        im = PIL.Image.fromarray(values.astype(np.float32), "F")
    elif mode == "I;16":
        im = PIL.Image.fromarray(np.clip(values, 0, 65535).astype(np.uint16))
    elif mode == "I":
        im = PIL.Image.fromarray(np.clip(values, -(2**31), 2**31 - 1).astype(np.int32), "I")
    else:
        im = PIL.Image.fromarray(np.uint8(np.clip(values, 0, 255))).convert(mode)
    im.save(path)
    return path


@settings(max_examples=60, deadline=None)
@given(
    mode=st.sampled_from(["F", "I", "I;16", "L", "RGB", "RGBA", "LA", "P", "1", "CMYK"]),
    scale=st.sampled_from([1.0, 255.0, 65535.0, 1e6, -255.0, 1e-3]),
    special=st.sampled_from([None, np.nan, np.inf, -np.inf]),
    seed=st.integers(0, 2**16),
    w=st.integers(1, 24),
    h=st.integers(1, 24),
)
def test_any_image_loads_finite_in_0_255_or_is_refused(
    tmp_path_factory, mode, scale, special, seed, w, h
):
    values = np.random.RandomState(seed).uniform(0, 1, (h, w)) * scale
    if special is not None:
        values[0, 0] = special
    suffix = {"F": ".tif", "I": ".tif", "CMYK": ".jpg"}.get(mode, ".png")
    with np.errstate(invalid="ignore"):
        path = save_mode(tmp_path_factory.mktemp("img") / f"x{suffix}", mode, values)
    try:
        img = imageio.load_image(path)
    except DreamError as e:
        assert mode == "F" and ("0..1" in str(e) or "not finite" in str(e)), e
        return
    assert img.dtype == np.float32 and img.shape == (h, w, 3)
    assert np.isfinite(img).all() and 0 <= img.min() and img.max() <= 255


@pytest.mark.parametrize(
    "values,words",
    [
        (lambda a: a / 255.0, ["0..1"]),
        (lambda a: np.where(a > 200, np.nan, a), ["not finite"]),
        (lambda a: np.where(a > 200, np.inf, a), ["not finite"]),
    ],
)
def test_float_images_that_would_dream_black_or_poison_are_refused(work, values, words):
    """Before: a 0..1 float TIFF dreamt a black image; NaN pixels reached Caffe."""
    folder = work[0]
    grey = np.asarray(PIL.Image.open(folder / "in.png").convert("L"), np.float64)
    with np.errstate(invalid="ignore"):
        save_mode(folder / "f.tif", "F", values(grey))
    refused(work, "dream", folder / "f.tif", "-o", folder / "o.png", *FAST, codes=(1,), words=words)


def test_animated_gif_says_it_uses_the_first_frame(work):
    folder, flags = work
    first = PIL.Image.open(folder / "in.png")
    first.save(folder / "a.gif", save_all=True, append_images=[first.rotate(180)])
    p = run(folder, "dream", folder / "a.gif", "-o", folder / "o.png", *FAST, *flags)
    assert p.returncode == 0, p.stderr
    assert "2 frames" in p.stderr and "first" in p.stderr


def png_declaring(width, height) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` (its pixels stop early)."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    rows = zlib.compress(b"\0" * (1 + 3 * width) * 64, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", rows)
        + chunk(b"IEND", b"")
    )


def test_a_header_declaring_a_huge_image_is_refused_from_the_header(work):
    """Before: Pillow's raw DecompressionBombWarning, then 2.7 GB and 12 s of decoding."""
    folder = work[0]
    (folder / "big.png").write_bytes(png_declaring(12000, 12000))
    refused(
        work, "dream", folder / "big.png", "-o", folder / "o.png", *FAST, codes=(1,), words=["GiB"]
    )


def test_a_huge_weights_file_is_refused_before_it_is_read(work):
    """Before: a 3 GB file was read whole (a sparse file here: no disk used)."""
    folder, flags = work
    big = folder / "tmpweights"
    big.mkdir()
    huge = big / "huge.caffemodel"
    with open(huge, "wb") as f:
        f.truncate(3 * 2**30)
    refused(
        (folder, [flags[0], flags[1], "--weights", huge]),
        *dream_argv(folder, *FAST),
        codes=(1,),
        words=["MiB"],
    )


# --- outputs -------------------------------------------------------------------------------
def test_outputs_respect_the_umask(work):
    """Before: 0600 whatever the umask (mkstemp's mode)."""
    folder, flags = work
    p = run(
        folder,
        *dream_argv(folder, "--raw", folder / "o.npy", *FAST, *flags),
        umask=0o027,
    )
    assert p.returncode == 0, p.stderr
    for name in ("o.png", "o.png.json", "o.npy"):
        assert (folder / name).stat().st_mode & 0o777 == 0o640, name


def test_synthetic_weights_respect_the_umask(tmp_path):
    """Before: 0600 (mkstemp's mode), unreadable to a container run as another uid."""
    code = (
        "import sys; from deepdream_caffe.build import caffe_source_dir as s; "
        "from deepdream_caffe.lab.synthetic import write_synthetic_weights as w; "
        "w(s() / 'models/bvlc_googlenet/deploy.prototxt', sys.argv[1])"
    )
    out = tmp_path / "w.caffemodel"
    subprocess.run(
        [sys.executable, "-c", code, str(out)], check=True, preexec_fn=lambda: os.umask(0o022)
    )
    assert out.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["w.caffemodel"]


def test_an_output_name_too_long_is_refused_before_anything_else(work):
    """Before: the whole dream ran, then the temporary name failed. The weights here do not
    exist, so a check made only after loading would name them instead."""
    folder, flags = work
    name = "o" * 240 + ".png"
    refused(
        (folder, [flags[0], flags[1], "--weights", folder / "missing.caffemodel"]),
        *dream_argv(folder, out=name),
        codes=(1,),
        words=["too long", "shorter name"],
    )


@pytest.mark.parametrize("failing", ["o.png", "o.npy"])
def test_a_failed_commit_leaves_every_earlier_output(work, monkeypatch, failing):
    """Before: the renames ran one by one, so the image failing left a new --raw and sidecar
    beside the old image."""
    folder, flags = work
    for name, data in (("o.png", b"old image"), ("o.png.json", b"old json"), ("o.npy", b"old raw")):
        (folder / name).write_bytes(data)
    before = Snapshot(folder)
    real = os.replace

    def replace(src, dst):
        if Path(dst).name == failing and Path(src).name.startswith("."):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    p = main_in_process(
        *argv(
            "dream", folder / "in.png", folder / "o.png", "--raw", folder / "o.npy", *flags, *FAST
        )
    )
    assert_refused(p, "No space left", before=before, codes=(1,))


# --- zoom's frames folder ------------------------------------------------------------------
def test_zoom_refuses_an_input_inside_its_frames_folder(work):
    """Before: FRAMES/0000.png, the input, was overwritten by the first frame."""
    folder = work[0]
    frames = folder / "frames"
    frames.mkdir()
    (frames / "0000.png").write_bytes((folder / "in.png").read_bytes())
    refused(
        work,
        *argv("zoom", frames / "0000.png", frames, *FAST, "--frames", "1"),
        codes=(1,),
        words=["inside the frames folder"],
    )


def test_zoom_refuses_an_earlier_runs_frames_unless_overwrite(work):
    """Before: new frames landed beside old ones, and zoom.json said otherwise."""
    folder, flags = work
    frames = folder / "frames"
    p = run(
        folder,
        *argv("zoom", folder / "in.png", frames, *FAST, *flags, "--frames", "3", "--octave-n", "1"),
    )
    assert p.returncode == 0, p.stderr
    refused(
        work,
        *argv("zoom", folder / "in.png", frames, *FAST, "--frames", "1"),
        codes=(1,),
        words=["earlier zoom", "--overwrite"],
    )
    p = run(
        folder,
        *argv(
            "zoom",
            folder / "in.png",
            frames,
            *FAST,
            *flags,
            "--frames",
            "1",
            "--octave-n",
            "1",
            "--overwrite",
        ),
    )
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in frames.iterdir()) == ["0000.png", "zoom.json"]
    assert json.loads((frames / "zoom.json").read_text())["zoom"]["frames_done"] == 1


@pytest.mark.parametrize("attempt", range(3))
def test_ctrl_c_while_starting_is_one_line(work, attempt):
    """Before: a KeyboardInterrupt traceback from inside an import; later, now and then, an
    ImportError traceback (the handler's SystemExit, raised inside numpy's C import, came out
    as one; a fresh clone's `make test` met it once). The signal is sent as soon as numpy is
    loaded, which happens among the command's own imports."""
    folder = work[0]
    proc = subprocess.Popen(
        [*CLI, *argv("dream", str(folder / "in.png"), str(folder / "o.png"))],
        stderr=subprocess.PIPE,
        text=True,
    )
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.time() + 30
    while time.time() < deadline and proc.poll() is None:
        try:
            if "numpy" in maps.read_text():
                break
        except OSError:
            pass
        time.sleep(0.002 * (attempt + 1))
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and "interrupted" in err, err
    assert not list(folder.glob("o.png*"))


# --- the mirror and the cache --------------------------------------------------------------
def test_a_wrong_file_in_a_mirror_that_is_also_the_cache_is_never_deleted(tmp_path, monkeypatch):
    """Before: the cache's clean-up deleted it, because the cache's data folder was the
    mirror."""
    data = tmp_path / "data"
    data.mkdir()
    wrong = data / "flowers.jpg"
    wrong.write_bytes(b"not the notebook's flowers")
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(data))
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(tmp_path))
    import pooch

    monkeypatch.setattr(pooch, "retrieve", lambda *a, **k: pytest.fail("downloaded into it"))
    before = Snapshot(data)
    with pytest.raises(DreamError, match="never changed"):
        assets.fetch(assets.NOTEBOOK_ASSETS["flowers.jpg"], progress=False)
    before.assert_unchanged()


def test_an_incomplete_model_folder_in_a_mirror_is_never_removed(tmp_path, monkeypatch):
    """The Places205 archive's folder is rebuilt when incomplete, unless it is a mirror's."""
    from deepdream_caffe import models

    data = tmp_path / "data"
    partial = data / "places205_googlenet"
    partial.mkdir(parents=True)
    (partial / "deploy_places205.protxt").write_text("mine")
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(data))
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(tmp_path))
    archive = tmp_path / "archive.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("a", "b"):
            (tmp_path / name).write_text(name)
            tar.add(tmp_path / name, arcname=name)
    before = Snapshot(data)
    with pytest.raises(DreamError, match="never changed"):
        models._extract(archive, ["a", "b"], partial)
    before.assert_unchanged()


@pytest.mark.parametrize("kind", ["file", "read-only"])
def test_an_unusable_cache_names_the_variable(work, kind, monkeypatch):
    """Before: a raw OSError and a misleading 'nothing was overwritten'."""
    folder = work[0]
    cache = folder / "cache"
    if kind == "file":
        cache.write_bytes(b"")
        env = {"DEEPDREAM_CAFFE_CACHE": str(cache), "DEEPDREAM_CAFFE_MIRROR": ""}
        line = refused(
            work,
            "fetch",
            "flowers.jpg",
            env=env,
            model=False,
            codes=(1,),
            words=["DEEPDREAM_CAFFE_CACHE"],
        )
        assert "nothing was overwritten" not in line
        return
    (cache / "data").mkdir(parents=True)
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(cache))
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", "")
    real = os.access  # as root, chmod alone would not stop a write
    monkeypatch.setattr(os, "access", lambda p, m: False if m == os.W_OK else real(p, m))
    with pytest.raises(DreamError, match="DEEPDREAM_CAFFE_CACHE"):
        assets.fetch(assets.NOTEBOOK_ASSETS["flowers.jpg"], progress=False)
