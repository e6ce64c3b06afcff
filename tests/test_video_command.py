"""`video`: a real clip in, a browser-playable mp4 out; resuming to the same bits; bad input
refused in one line with nothing written."""

import os
import signal
import subprocess
import sys

import imageio_ffmpeg
import numpy as np
import PIL.Image
import pytest
from helpers import main_in_process, run_cli
from test_anim import clip_frames
from test_video import decoded

pytestmark = pytest.mark.caffe
FAST = ["--iter-n", "1", "--octave-n", "2", "--seed", "4", "--end", "inception_3b/output"]
CYCLING = FAST[:-2]  # --layers brings its own layers: no --end
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def command(*args):
    return [sys.executable, "-m", "deepdream_caffe.cli", *map(str, args)]


def run(*args):
    """The one CLI runner (tests/helpers.py), Caffe's log quiet."""
    return run_cli(*args, env={"GLOG_minloglevel": "2"})


def snapshot(folder):
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def clip(tmp_path, sky):
    """Frames of a slow pan (odd height 63: padded), and the same as an h264 24 fps clip with
    a sine tone."""
    frames = tmp_path / "frames"
    frames.mkdir()
    for i, f in enumerate(clip_frames(sky, 6)):
        f.crop((0, 0, 96, 63)).save(frames / f"f{i:03d}.png")
    mp4 = tmp_path / "clip.mp4"
    subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-framerate",
            "24",
            "-i",
            str(frames / "f%03d.png"),
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=1",
            "-vf",
            "pad=96:64",
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            "-shortest",
            str(mp4),
        ],
        check=True,
    )
    return frames, mp4


def model_flags(nets):
    definition, weights = nets["bvlc_googlenet"]
    return ["--model-def", definition, "--weights", weights]


def test_a_real_clip_gives_an_h264_mp4_with_its_frames_rate_and_audio(tmp_path, clip, nets):
    out = tmp_path / "out.mp4"
    p = run("video", clip[1], "-o", out, *FAST, *model_flags(nets), "--flow", "--frames", "4")
    assert p.returncode == 0, p.stderr
    (w, h), fps, frames = decoded(out)
    assert ((w, h), fps, len(frames)) == ((96, 64), 24.0, 4)
    info = subprocess.run([FFMPEG, "-hide_banner", "-i", str(out)], capture_output=True, text=True)
    assert "h264" in info.stderr and "yuv420p" in info.stderr and "Audio: aac" in info.stderr
    assert sorted(q.name for q in (tmp_path / "out_frames").glob("*.png")) == [
        f"{i:04d}.png" for i in range(4)
    ]


def test_a_folder_gives_even_sizes_and_the_given_rate(tmp_path, clip, nets):
    out = tmp_path / "out.mp4"
    p = run(
        "video",
        clip[0],
        "-o",
        out,
        *FAST,
        *model_flags(nets),
        "--fps",
        "12",
        "--frames-dir",
        tmp_path / "dreamt",
    )
    assert p.returncode == 0, p.stderr
    (w, h), fps, frames = decoded(out)
    assert ((w, h), fps, len(frames)) == ((96, 64), 12.0, 6)  # 63 rows padded to 64
    with PIL.Image.open(tmp_path / "dreamt" / "0005.png") as im:
        assert im.size == (96, 63)


@pytest.mark.parametrize("carry", [["--blend", "0.3"], ["--flow"]])
def test_an_interrupted_run_resumes_to_the_same_bits(tmp_path, clip, nets, carry, monkeypatch):
    """Ctrl-C right after frame 1 and its state are written (in this process: a signal sent
    when 0001.png appeared could come after the last frame, about 0.4 s later, or skip)."""
    from deepdream_caffe import videojob

    args = [
        clip[0],
        *CYCLING,
        *model_flags(nets),
        *carry,
        "--layers",
        "inception_3a/output,inception_3b/output",
    ]
    whole = tmp_path / "whole.mp4"
    assert run("video", *args, "-o", whole).returncode == 0
    out, dreamt = tmp_path / "out.mp4", tmp_path / "out_frames"
    real = videojob.write_state

    def state_then_ctrl_c(frames_dir, v, *rest):
        real(frames_dir, v, *rest)
        if v == 1:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(videojob, "write_state", state_then_ctrl_c)
    p = main_in_process("video", *args, "-o", out)
    monkeypatch.undo()
    assert p.returncode == 130 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not out.exists() and (dreamt / "0001.png").exists()
    assert not (dreamt / "0005.png").exists()
    again = run("video", *args, "-o", out)
    assert again.returncode == 0, again.stderr
    for i in range(6):
        a = np.asarray(PIL.Image.open(tmp_path / "whole_frames" / f"{i:04d}.png"))
        b = np.asarray(PIL.Image.open(dreamt / f"{i:04d}.png"))
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("extra", [[], ["--tile", "64", "--flow"]])
def test_more_frames_later_continue_the_same_run(tmp_path, clip, nets, extra):
    args = [clip[0], *FAST, *model_flags(nets), *extra]
    assert run("video", *args, "-o", tmp_path / "a.mp4", "--frames", "3").returncode == 0
    assert run("video", *args, "-o", tmp_path / "b.mp4", "--frames", "2").returncode == 0
    p = run("video", *args, "-o", tmp_path / "b.mp4", "--frames", "3")
    assert p.returncode == 0 and "1 dreamt now" in p.stderr, p.stderr
    for i in range(3):
        assert (tmp_path / "a_frames" / f"{i:04d}.png").read_bytes() == (
            tmp_path / "b_frames" / f"{i:04d}.png"
        ).read_bytes()


def test_other_settings_in_the_frames_folder_are_refused(tmp_path, clip, nets):
    args = [clip[0], "-o", tmp_path / "a.mp4", *model_flags(nets), "--frames", "1"]
    assert run("video", *args, *FAST).returncode == 0
    before = snapshot(tmp_path)
    p = run("video", *args, *FAST, "--blend", "0.7")
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "other settings" in p.stderr and snapshot(tmp_path) == before


def bad_inputs(tmp_path):
    (tmp_path / "notes.txt").write_text("not a video\n")
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    PIL.Image.new("RGB", (96, 64)).save(mixed / "a.png")
    PIL.Image.new("RGB", (64, 96)).save(mixed / "b.png")
    return {
        "notes.txt": "not a video",
        "empty": "no .png frames",
        "mixed": "share one size",
        "missing.mp4": "does not exist",
    }


@pytest.mark.parametrize("name", ["notes.txt", "empty", "mixed", "missing.mp4"])
def test_unreadable_input_gets_one_line_and_nothing_written(tmp_path, nets, name):
    words = bad_inputs(tmp_path)[name]
    before = snapshot(tmp_path)
    p = run("video", tmp_path / name, "-o", tmp_path / "o.mp4", *FAST, *model_flags(nets))
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1, p.stderr
    assert lines[0].startswith("deepdream-caffe: error: ") and words in lines[0], lines[0]
    assert snapshot(tmp_path) == before and not (tmp_path / "o_frames").exists()


def test_a_guided_tiled_video(tmp_path, clip, nets, flowers):
    PIL.Image.fromarray(np.uint8(flowers)).save(tmp_path / "guide.png")
    out = tmp_path / "g.mp4"
    p = run(
        "video",
        clip[0],
        "-o",
        out,
        *FAST,
        *model_flags(nets),
        "--guide",
        tmp_path / "guide.png",
        "--tile",
        "64",
        "--frames",
        "2",
    )
    assert p.returncode == 0, p.stderr
    assert len(decoded(out)[2]) == 2


def test_the_frames_folders_own_files_are_read_as_untrusted_input(tmp_path, clip, nets):
    """video.json and resume.npz are the command's own files, read back: a tampered one is
    one line, and nothing in the folder changes."""
    args = [clip[0], "-o", tmp_path / "a.mp4", *model_flags(nets), "--frames", "2", *FAST]
    assert run("video", *args).returncode == 0
    frames = tmp_path / "a_frames"
    for name, content in [
        ("resume.npz", b"not an archive"),
        ("video.json", b"[1, 2]"),
        ("video.json", b"null"),
    ]:
        kept = (frames / name).read_bytes()
        (frames / name).write_bytes(content)
        before = snapshot(tmp_path)
        p = run("video", *args)
        lines = p.stderr.strip().splitlines()
        assert p.returncode == 1 and len(lines) == 1, p.stderr
        assert "Traceback" not in p.stderr and "a bug" not in lines[0], lines[0]
        assert snapshot(tmp_path) == before
        (frames / name).write_bytes(kept)


@pytest.mark.parametrize(
    "flags",
    [
        ["--flow", "--blend", "0.9"],
        ["--layers", "inception_4c/output,,inception_3b/output"],
        ["--layers", "inception_4c/output", "--end", "inception_3b/output"],
    ],
)
def test_flags_that_contradict_are_usage_errors(tmp_path, clip, nets, flags):
    p = run("video", clip[0], "-o", tmp_path / "o.mp4", *model_flags(nets), *flags)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o_frames").exists()


def test_the_frames_folder_may_not_be_the_output(tmp_path, clip, nets):
    out = tmp_path / "v.mp4"
    p = run("video", clip[0], "-o", out, "--frames-dir", out, *model_flags(nets), *FAST)
    assert p.returncode == 1 and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not out.exists()


def test_a_damaged_frame_or_changed_input_is_not_continued(tmp_path, clip, nets):
    """Kept frames are checked whole before a run continues, and the run continues only on
    the input frames it began with (every frame's content, not only the first's name)."""
    args = [clip[0], "-o", tmp_path / "a.mp4", *model_flags(nets), "--frames", "3", *FAST]
    assert run("video", *args).returncode == 0
    frames = tmp_path / "a_frames"
    kept = (frames / "0001.png").read_bytes()
    (frames / "0001.png").write_bytes(b"junk")
    before = snapshot(tmp_path)
    p = run("video", *args)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 1 and len(lines) == 1 and "damaged" in lines[0], p.stderr
    assert snapshot(tmp_path) == before
    (frames / "0001.png").write_bytes(kept)
    last = sorted(clip[0].iterdir())[-1]
    with PIL.Image.open(last) as im:
        size = im.size
    PIL.Image.new("RGB", size).save(last)  # a later input frame changed
    before = snapshot(tmp_path)
    p = run("video", *args)
    assert p.returncode == 1 and "other settings" in p.stderr, p.stderr
    assert snapshot(tmp_path) == before


def test_a_second_video_into_a_frames_folder_being_written_is_refused(
    tmp_path, clip, nets, monkeypatch
):
    """Two runs into one frames folder: the second, started while the first holds it, is
    refused in one line (before the lock, the same settings let it resume the first run's
    frames while they were being written); and one that passed its first check before the
    first run began the folder is refused once it holds it (now another run's, other seed)."""
    from deepdream_caffe import videojob

    frames_dir = tmp_path / "shared_frames"
    args = [clip[0], *model_flags(nets), "--frames", "2", "--frames-dir", frames_dir, *FAST]
    real_run, second = videojob.worker.run, []

    def run_then_another(*a, **kw):  # the first run holds its folder; the second starts now
        if not second:
            second.append(None)
            # the same settings: a resume of that run, as far as video.json can tell
            second[0] = main_in_process("video", *args, "-o", tmp_path / "b.mp4", "--seed", "1")
        return real_run(*a, **kw)

    monkeypatch.setattr(videojob.worker, "run", run_then_another)
    first = main_in_process("video", *args, "-o", tmp_path / "a.mp4", "--seed", "1")
    monkeypatch.undo()
    assert first.returncode == 0, first.stderr
    assert second[0].returncode == 1 and second[0].stderr.count("\n") == 1, second[0].stderr
    assert "another command is writing frames" in second[0].stderr
    assert not (tmp_path / "b.mp4").exists()

    real_read, calls = videojob.read_settings, []

    def first_check_before_the_folder_was_begun(frames, settings):
        calls.append(frames)
        return None if len(calls) == 1 else real_read(frames, settings)

    monkeypatch.setattr(videojob, "read_settings", first_check_before_the_folder_was_begun)
    late = main_in_process("video", *args, "-o", tmp_path / "c.mp4", "--seed", "3")
    assert late.returncode == 1 and "other settings (seed)" in late.stderr, late.stderr
    assert not (tmp_path / "c.mp4").exists()
