"""zoom's video: any frame size, only this run's frames, checked first, written atomically."""

import os
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import PIL.Image
import pytest
from conftest import notebook_file
from helpers import refused, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepdream_caffe import video
from deepdream_caffe.errors import DreamError


def write_frames(folder, frames, fmt="png"):
    folder.mkdir(exist_ok=True)
    for i, frame in enumerate(frames):
        PIL.Image.fromarray(frame).save(folder / f"{i:04d}.{fmt}")
    return folder


def noise(w, h, seed):
    return np.uint8(np.random.RandomState(seed).randint(0, 256, (h, w, 3)))


def decoded(path):
    """(width, height), fps and the frames of a video, decoded by ffmpeg."""
    p = subprocess.run(
        [
            imageio_ffmpeg.get_ffmpeg_exe(),
            "-hide_banner",
            "-i",
            str(path),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ],
        capture_output=True,
    )
    assert p.returncode == 0, p.stderr.decode()
    stream = next(ln for ln in p.stderr.decode().splitlines() if "Video:" in ln)
    w, h = map(int, re.search(r", (\d+)x(\d+)[ ,]", stream).groups())
    fps = float(re.search(r"([\d.]+) fps", stream).group(1))
    frames = np.frombuffer(p.stdout, np.uint8).reshape(-1, h, w, 3)
    return (w, h), fps, list(frames)


def test_the_notebooks_own_odd_sized_sky_encodes(tmp_path):
    sky = np.asarray(PIL.Image.open(notebook_file("sky1024px.jpg")).convert("RGB"))
    assert sky.shape[:2] == (575, 1024)  # the odd height that broke libx264
    frames = write_frames(tmp_path / "frames", [sky, sky[::-1].copy()])
    out = tmp_path / "zoom.mp4"
    video.encode(frames, "png", 2, out, 25)
    size, fps, got = decoded(out)
    assert size == (1024, 576) and fps == 25 and len(got) == 2
    # the image sits at the top left, unscaled; the added bottom row is black
    err = np.abs(got[0][:575].astype(int) - sky.astype(int))
    assert np.median(err) <= 3  # H.264 at its default quality: small, lossy differences
    # the added bottom row is black but for the colour H.264 shares with the row above (4:2:0)
    assert got[0][575].mean() < 0.1 * sky[574].mean()


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(w=st.integers(1, 41), h=st.integers(1, 41), fps=st.sampled_from([0.5, 12, 29.97, 240]))
def test_any_size_encodes_padded_to_even(tmp_path, w, h, fps):
    folder = tmp_path / f"f{w}x{h}"
    write_frames(folder, [noise(w, h, 0)])
    out = folder / "v.mp4"
    video.encode(folder, "png", 1, out, fps)
    size, got_fps, frames = decoded(out)
    assert size == (w + w % 2, h + h % 2) and len(frames) == 1
    assert got_fps == pytest.approx(fps, rel=0.01)


def test_only_this_runs_frames_are_encoded(tmp_path):
    frames = write_frames(tmp_path / "frames", [noise(32, 18, i) for i in range(5)], "jpg")
    video.encode(frames, "jpg", 3, tmp_path / "v.mkv", 10)  # frames 3 and 4 are stale
    assert len(decoded(tmp_path / "v.mkv")[2]) == 3


def test_a_failed_encoding_leaves_the_old_video_and_no_temporary(tmp_path):
    frames = write_frames(tmp_path / "frames", [noise(32, 18, 0)])
    (frames / "0000.png").write_bytes(b"not a png")
    out = tmp_path / "v.mp4"
    out.write_bytes(b"the previous video")
    with pytest.raises(DreamError, match="ffmpeg could not write"):
        video.encode(frames, "png", 1, out, 25)
    assert out.read_bytes() == b"the previous video"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames", "v.mp4"]


def test_the_video_gets_the_usual_file_mode(tmp_path):
    frames = write_frames(tmp_path / "frames", [noise(8, 8, 0)])
    video.encode(frames, "png", 1, tmp_path / "v.mp4", 25)
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "v.mp4").stat().st_mode & 0o777 == 0o666 & ~umask


def test_the_wheels_ffmpeg_is_used_when_the_system_has_none(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on it
    assert video.find_ffmpeg() == imageio_ffmpeg.get_ffmpeg_exe()


def test_no_ffmpeg_at_all_is_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))

    def missing():
        raise RuntimeError("no ffmpeg")

    monkeypatch.setattr(imageio_ffmpeg, "get_ffmpeg_exe", missing)
    with pytest.raises(DreamError, match="imageio-ffmpeg"):
        video.check_video(25)


@pytest.mark.parametrize("fps", [0, -1, 1e39, float("nan"), float("inf")])
def test_a_frame_rate_ffmpeg_cannot_take_is_refused(fps):
    with pytest.raises(DreamError, match="out of range"):
        video.check_video(fps)


cli = run_cli


@pytest.mark.caffe
def test_zoom_video_on_an_odd_sized_image(tmp_path, sky, nets):
    definition, weights = nets["bvlc_googlenet"]
    img = tmp_path / "odd.png"
    PIL.Image.fromarray(np.uint8(sky)).resize((129, 73)).save(img)
    p = cli(
        "zoom",
        img,
        "-o",
        tmp_path / "frames",
        "--frames",
        2,
        "--seed",
        0,
        "--iter-n",
        1,
        "--octave-n",
        2,
        "--model-def",
        definition,
        "--weights",
        weights,
        "--video",
        tmp_path / "zoom.mp4",
        "--fps",
        8,
    )
    assert p.returncode == 0, p.stderr
    size, fps, frames = decoded(tmp_path / "zoom.mp4")
    assert size == (130, 74) and fps == 8 and len(frames) == 2
    first = np.asarray(PIL.Image.open(tmp_path / "frames" / "0000.png"))
    assert np.median(np.abs(frames[0][:73, :129].astype(int) - first)) <= 3


@pytest.mark.parametrize(
    "flags,code,message",
    [
        (["--video", "zoom.gif"], 1, "does not end in"),
        (["--video", "nowhere/zoom.mp4"], 1, "does not exist"),
        (["--video", "frames.mp4"], 1, "is a folder"),
        (["--video", "in.png"], 1, "does not end in"),
        (["--video", "zoom.mp4", "--fps", "0"], 2, "greater than 0"),
        (["--video", "zoom.mp4", "--fps", "nan"], 2, "not a finite number"),
    ],
)
def test_a_bad_video_is_refused_before_dreaming(tmp_path, sky, flags, code, message):
    img = tmp_path / "in.png"
    PIL.Image.fromarray(np.uint8(sky)).save(img)
    (tmp_path / "frames.mp4").mkdir()
    flags[1] = tmp_path / flags[1]  # the video's name
    refused(
        "zoom",
        img,
        "-o",
        tmp_path / "frames",
        *flags,
        words=[message],
        watch=[tmp_path],
        codes=(code,),
    )
    assert not (tmp_path / "frames").exists()  # nothing was dreamed
