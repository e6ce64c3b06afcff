"""The file system or the process's resources fail under the command: a full disk, a limit
of the process, a standard stream nobody reads. Each case below failed before its fix."""

import errno
import os
import resource
import signal
import subprocess
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import CLI, Snapshot, assert_refused

from deepdream_caffe import models
from deepdream_caffe.errors import DreamError

pytestmark = pytest.mark.caffe
FAST = ["--iter-n", "1", "--octave-n", "1", "--seed", "0"]


@pytest.fixture
def work(tmp_path, sky, nets):
    """A folder with an input image, and the flags for the synthetic bvlc_googlenet."""
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    definition, weights = nets["bvlc_googlenet"]
    return tmp_path, ["--model-def", str(definition), "--weights", str(weights)]


def dream(folder, model, limit=None, **streams):
    """``dream`` in.png to o.png in a process of its own; ``limit``: (resource, soft)."""

    def limited():
        if limit is not None:
            resource.setrlimit(limit[0], (limit[1], resource.getrlimit(limit[0])[1]))

    argv = ["dream", folder / "in.png", "-o", folder / "o.png", *FAST, *model]
    return subprocess.run(
        [*CLI, *map(str, argv)], text=True, timeout=300, preexec_fn=limited, **streams
    )


def test_a_file_size_limit_is_named_with_its_ulimit(work):
    """Before: "[Errno 27] File too large: check the path, its permissions and the free
    space", though the file too large was the run's in-memory copy of the weights."""
    folder, model = work
    before = Snapshot(folder)
    p = dream(folder, model, limit=(resource.RLIMIT_FSIZE, 2**20), capture_output=True)
    assert_refused(p, "File too large", "ulimit -f", before=before, codes=(1,))


def test_raw_beyond_a_file_size_limit_says_why(tmp_path):
    """A full disk or a file-size limit under ``--raw``. Before: numpy's own "N requested
    and M written", with no errno and no reason."""
    code = (
        "import numpy as np; from deepdream_caffe import imageio\n"
        "try:\n"
        f"    imageio.save_array(np.zeros(100000, np.float32), {str(tmp_path / 'r.npy')!r})\n"
        "except OSError as e:\n"
        "    print(e.errno, e)"
    )
    limit = (resource.RLIMIT_FSIZE, (65536, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    p = subprocess.run(
        [CLI[0], "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=lambda: resource.setrlimit(*limit),
    )
    assert p.stdout.startswith("27 "), (p.stdout, p.stderr)  # EFBIG, said as such
    assert not list(tmp_path.iterdir())  # no temporary file left


@pytest.mark.parametrize("unbuffered", ["", "1"])
def test_a_closed_stdout_pipe_is_a_quiet_end(tmp_path, unbuffered):
    """``info | head -1``. Before: exit 1 and "Broken pipe: check the path, its permissions
    and the free space; no output was left half-written". With Python's buffer (no
    PYTHONUNBUFFERED, as on most machines), the failure comes at the last flush, after the
    command: before, exit 120 and "Exception ignored ... BrokenPipeError"."""
    read, write = os.pipe()
    os.close(read)  # the reader has gone before the first line
    try:
        p = info_into(write, unbuffered)
    finally:
        os.close(write)
    assert (p.returncode, p.stderr) == (128 + signal.SIGPIPE, "")


@pytest.mark.parametrize("unbuffered", ["", "1"])
@pytest.mark.parametrize("args", [["info"], ["--help"], ["dream", "--help"]])
def test_a_full_disk_behind_stdout_is_one_line(unbuffered, args):
    """``info > /dev/full``. Before, with Python's buffer: exit 120, "Exception ignored in:
    <_io.TextIOWrapper name='<stdout>' ...>" and the error on a second line; ``dream --help``
    (argparse drops its own write errors) said nothing and exit 0."""
    with open("/dev/full", "w") as full:
        p = info_into(full, unbuffered, args)
    assert_refused(p, "No space left on device", codes=(1,))


def info_into(stdout, unbuffered: str, args=("info",)):
    """``deepdream-caffe info`` (or ``args``) with its stdout on ``stdout``, Python's buffer
    on or off."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = unbuffered
    return subprocess.run(
        [*CLI, *args], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=120, env=env
    )


def test_an_unwritable_stderr_does_not_fail_a_finished_dream(work):
    """``2>/dev/full``. Before: the dream's files were written, then "wrote ..." failed and
    the command said exit 1."""
    folder, model = work
    with open("/dev/full", "w") as full:
        p = dream(folder, model, stderr=full)
    assert p.returncode == 0
    assert (folder / "o.png").is_file() and (folder / "o.png.json").is_file()


def test_places205_builder_definition_into_an_unusable_cache(tmp_path, monkeypatch):
    """Without Places205's archive, its definition is written into the cache. Before, a cache
    that is a file ended in "[Errno 20] Not a directory: ...: check the path, ...", after a
    note that the builder's definition would be used."""
    cache = tmp_path / "cache"
    cache.write_bytes(b"")
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(cache))
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", "")
    said = []
    with pytest.raises(DreamError, match="DEEPDREAM_CAFFE_CACHE"):
        models.model_definition(models.get_model("places205_googlenet"), False, said.append)
    assert said == []  # the refusal is the one line
    assert cache.read_bytes() == b""


def test_a_copy_kept_aside_that_fails_leaves_no_part_of_itself(tmp_path, monkeypatch):
    """Where a hard link fails (another file system's rules), the replaced file is copied
    aside; a full disk mid-copy must leave no partial copy beside it."""
    import shutil

    from deepdream_caffe import imageio

    out = tmp_path / "o.png"
    out.write_bytes(b"the earlier result")

    def no_link(*args):
        raise OSError(errno.EPERM, "no hard links here")

    def half_copy(src, dst, **kwargs):
        Path(dst).write_bytes(b"the ear")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", no_link)
    monkeypatch.setattr(shutil, "copy2", half_copy)
    with pytest.raises(OSError, match="No space"), imageio.all_or_nothing() as batch:
        batch(out).write_bytes(b"the new result")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
    assert out.read_bytes() == b"the earlier result"
