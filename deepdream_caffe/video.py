"""Encoding zoom frames into a video with ffmpeg: any frame size, checked first, written atomically.

libx264 with yuv420p (the pixel format every player and browser plays) needs an even width and
height; the notebook's own sky1024px.jpg is 1024x575. Odd sizes are padded by one black row or
column at the bottom or right, so every dreamed pixel is in the video (cropping would drop
one, and yuv444 would not play in browsers or QuickTime). The frames themselves are untouched.

ffmpeg is the system's when it has libx264, else the one shipped in the ``imageio-ffmpeg``
wheel (a pinned requirement), so no apt step is needed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from .errors import DreamError
from .imageio import atomic_path, umask

SUFFIXES = (".mp4", ".mkv", ".mov")  # containers that hold H.264
MAX_FPS = 1000.0
# Pad to even sizes: ceil(w/2)*2 x ceil(h/2)*2, the image at the top left, black elsewhere.
PAD_EVEN = "pad=ceil(iw/2)*2:ceil(ih/2)*2:0:0:black"


def has_libx264(exe: str) -> bool:
    try:
        p = subprocess.run(
            [exe, "-hide_banner", "-encoders"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return p.returncode == 0 and " libx264 " in p.stdout


def find_ffmpeg() -> str:
    """The system's ffmpeg if it has libx264, else imageio-ffmpeg's; DreamError if neither."""
    system = shutil.which("ffmpeg")
    if system and has_libx264(system):
        return system
    try:
        import imageio_ffmpeg

        bundled = imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        bundled = None
    if bundled and has_libx264(bundled):
        return bundled
    raise DreamError(
        "--video needs ffmpeg with libx264, and none was found",
        "pip install -r requirements.txt (imageio-ffmpeg ships one), or "
        "apt-get install ffmpeg, or leave out --video",
    )


def check_video(fps: float) -> str:
    """What ``--video`` needs beyond a writable name (the caller checks that): a frame rate
    ffmpeg takes, and an ffmpeg with libx264. Returns the ffmpeg to use."""
    if not 0 < fps <= MAX_FPS:
        raise DreamError(f"--fps {fps} is out of range", f"give a rate in (0, {MAX_FPS:g}]")
    return find_ffmpeg()


def encode(
    frames_dir: Path,
    fmt: str,
    count: int,
    path: Path,
    fps: float,
    ffmpeg: str | None = None,
    audio: Path | None = None,
) -> None:
    """Encode frames ``0000.fmt`` .. ``count-1`` of ``frames_dir`` into ``path``, atomically.

    Only the first ``count`` frames are read, so stale frames of an earlier, longer run in the
    same folder never end up in the video. ``path`` appears complete or not at all.
    ``audio``: a file whose first audio track goes along (AAC, cut to the frames).
    """
    if count < 1:
        raise DreamError(f"no frames to encode into {path}", "let zoom finish at least one frame")
    ffmpeg = ffmpeg or find_ffmpeg()
    with atomic_path(path) as tmp:
        cmd = [
            ffmpeg,
            "-y",
            "-hide_banner",
            "-loglevel",
            "error",
            "-framerate",
            f"{fps:g}",
            "-i",
            str(Path(frames_dir) / f"%04d.{fmt}"),
            *(
                ["-i", str(audio), "-map", "0:v:0", "-map", "1:a:0?", "-c:a", "aac", "-shortest"]
                if audio is not None
                else []
            ),
            "-frames:v",
            str(count),
            "-vf",
            PAD_EVEN,
            "-c:v",
            "libx264",
            "-pix_fmt",
            "yuv420p",
            "-movflags",
            "+faststart",
            str(tmp),
        ]
        p = subprocess.run(cmd, capture_output=True, text=True)
        if p.returncode != 0:
            last = (p.stderr.strip().splitlines() or ["no message"])[-1]
            raise DreamError(
                f"ffmpeg could not write {path} ({last})",
                "check the frames and the disk; the frames are kept",
            )
        os.chmod(tmp, 0o666 & ~umask())  # the temporary file is private; the video is not
