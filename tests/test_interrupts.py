"""A signal at the worst moment: just after a rename, a temporary file, a frame, a record.

Each test runs the command in this process and has the product's own step (a rename, a
record) send the signal to this process right after it returns, as Ctrl-C or a service
manager's SIGTERM could at any time; Python raises the handler's exception at the next
bytecode. Whatever the moment, the files on disk must agree with their record, no temporary
file may stay, and nothing else may change.
"""

import contextlib
import hashlib
import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import main_in_process

from deepdream_caffe import imageio, interrupts, sidecar

pytestmark = pytest.mark.caffe
SIGNALS = [signal.SIGINT, signal.SIGTERM]
FAST = ["--iter-n", "1", "--octave-n", "1"]


@pytest.fixture
def work(tmp_path, sky, nets):
    """A folder with an input image, and the flags for the synthetic bvlc_googlenet."""
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    definition, weights = nets["bvlc_googlenet"]
    return tmp_path, ["--model-def", definition, "--weights", weights]


def signal_after(monkeypatch, owner, name, signum, when=lambda *args: True):
    """Replace ``owner.name`` by a call to it that then sends ``signum`` to this process,
    once, the first time ``when(*args)`` holds."""
    real, sent = getattr(owner, name), []

    def then_signal(*args, **kwargs):
        result = real(*args, **kwargs)
        if not sent and when(*args):
            sent.append(True)
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(owner, name, then_signal)


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hidden(folder):
    return sorted(p.name for p in folder.rglob(".*"))


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_between_the_renames_leaves_image_and_sidecar_agreeing(work, monkeypatch, signum):
    """Before: a signal just after the image's rename, before ``_commit`` noted it, left the
    new image beside the sidecar of the dream it replaced (nothing was put back for it)."""
    folder, model = work
    out = folder / "o.png"
    dream = ["dream", folder / "in.png", "-o", out, *model, *FAST]
    assert main_in_process(*dream, "--seed", "1").returncode == 0
    signal_after(monkeypatch, os, "replace", signum, lambda src, dst: dst == out)
    p = main_in_process(*dream, "--seed", "2")
    assert p.returncode == 128 + signum, p.stderr
    record = json.loads((folder / "o.png.json").read_text())
    assert record["outputs"]["image"]["sha256"] == sha256(out)
    assert not hidden(folder)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_as_a_temporary_file_is_made_leaves_none(work, monkeypatch, signum):
    """Before: a signal while mkstemp's file got its mode (the umask is read by setting it)
    left ``.o.png.XXXXXXXX.png``, not yet among the files the batch removes, and the process's
    umask at 022."""
    folder, model = work
    signal_after(monkeypatch, os, "umask", signum, lambda mask: mask == 0o022)
    previous = os.umask(0o077)
    try:
        p = main_in_process("dream", folder / "in.png", "-o", folder / "o.png", *model, *FAST)
        assert os.umask(0o077) == 0o077
    finally:
        os.umask(previous)
    assert p.returncode == 128 + signum, p.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["in.png"]


def test_reading_the_umask_is_not_interrupted(monkeypatch):
    """Reading the umask sets it for a moment: a signal then must not leave it set."""
    before = signal.signal(signal.SIGTERM, interrupts.interrupt)
    previous = os.umask(0o027)
    try:
        signal_after(monkeypatch, os, "umask", signal.SIGTERM, lambda mask: mask != 0o027)
        with pytest.raises(interrupts.Interrupted):
            imageio.umask()
        assert os.umask(0o027) == 0o027
    finally:
        monkeypatch.undo()
        os.umask(previous)
        signal.signal(signal.SIGTERM, before)


def test_a_block_held_on_another_thread_does_not_hold_the_main_thread():
    """Signals reach the main thread only: a block held elsewhere (a Dask worker's thread
    writing a dream) must neither delay it nor have the other thread raise it."""
    entered, leave, raised = threading.Event(), threading.Event(), []

    def other():
        try:
            with interrupts.held():
                entered.set()
                leave.wait(10)
        except interrupts.Interrupted:
            raised.append(True)

    before = signal.signal(signal.SIGTERM, interrupts.interrupt)
    thread = threading.Thread(target=other)
    try:
        thread.start()
        entered.wait(10)
        with pytest.raises(interrupts.Interrupted):
            os.kill(os.getpid(), signal.SIGTERM)
            leave.wait(1)  # at once: the handler raises in this thread
    finally:
        leave.set()
        thread.join()
        signal.signal(signal.SIGTERM, before)
    assert not raised


def assert_zoom_agrees(frames):
    """The frames on disk are 0000.png .. and zoom.json counts them all, or there are none."""
    names = sorted(p.name for p in frames.glob("[!.]*.png"))
    record = frames / "zoom.json"
    done = json.loads(record.read_text())["zoom"]["frames_done"] if record.exists() else 0
    assert names == [f"{i:04d}.png" for i in range(done)], (names, done)
    assert not hidden(frames)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_as_zoom_json_is_made_still_writes_it(work, monkeypatch, signum):
    """Before: a signal once every frame was written, while zoom.json's record was made (it
    hashes every frame), left the frames without zoom.json."""
    folder, model = work
    frames = folder / "frames"
    signal_after(monkeypatch, sidecar, "run_record", signum)
    p = main_in_process("zoom", folder / "in.png", "-o", frames, *model, *FAST, "--frames", "2")
    assert p.returncode == 128 + signum, p.stderr
    assert (frames / "zoom.json").exists()
    assert_zoom_agrees(frames)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_while_overwrite_removes_a_zoom_leaves_no_part_of_it(work, monkeypatch, signum):
    """Before: a signal after --overwrite removed the earlier run's first frame left its other
    frames beside its zoom.json, which still counted the removed one."""
    folder, model = work
    frames = folder / "frames"
    zoom = ["zoom", folder / "in.png", "-o", frames, *model, *FAST]
    assert main_in_process(*zoom, "--frames", "3").returncode == 0
    signal_after(monkeypatch, Path, "unlink", signum, lambda path, **_: path.name == "0000.png")
    p = main_in_process(*zoom, "--frames", "1", "--overwrite")
    assert p.returncode == 128 + signum, p.stderr
    assert_zoom_agrees(frames)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_while_a_sweep_writes_its_manifest_writes_every_part(work, monkeypatch, signum):
    """Before: a signal as the sweep ended (its gallery makes a thumbnail of every result)
    left manifest.json and manifest.csv without index.html, or beside an earlier run's."""
    from deepdream_caffe import gallery, sweep

    folder, model = work
    out = folder / "sweep"
    tasks = [sweep.Task(name, dict.fromkeys(sweep.GRID_AXES, name)) for name in ("a", "b")]

    def run_on(client, spec, todo):  # the cluster's part: every task failed
        for t in todo:
            t.status, t.reason = "failed", "test"

    monkeypatch.setattr(sweep, "plan_tasks", lambda spec: (tasks, {"a": {}, "b": {}}))
    monkeypatch.setattr(sweep, "is_kept", lambda image, expected: False)
    monkeypatch.setattr(sweep, "connect", lambda spec, say: contextlib.nullcontext())
    monkeypatch.setattr(sweep, "run_on", run_on)
    signal_after(monkeypatch, gallery, "render", signum)
    p = main_in_process("sweep", folder / "in.png", "-o", out, *model)
    assert p.returncode == 128 + signum, p.stderr
    rows = json.loads((out / "manifest.json").read_text())["tasks"]
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert (out / "manifest.csv").read_text().count("failed,test") == 2
    assert (out / "index.html").read_text().count("failed: test") == 2
    assert not hidden(out)


@pytest.mark.parametrize("signum", SIGNALS)
def test_a_signal_as_a_bundle_is_stamped_leaves_it_whole(work, monkeypatch, signum):
    """Before: a signal after export-golden's files landed, while bundle.json got the run's
    record (which hashes the files again), left bundle.json without it."""
    folder, model = work
    out = folder / "golden"
    signal_after(monkeypatch, sidecar, "shared_fields", signum)
    p = main_in_process("export-golden", folder / "in.png", "-o", out, "--seed", "2", *model, *FAST)
    assert p.returncode == 128 + signum, p.stderr
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["run"]["outputs"]["bundle.npz"]["sha256"] == sha256(out / "bundle.npz")
    assert not hidden(folder)


def test_a_second_signal_as_a_held_block_ends_leaves_nothing_pending(monkeypatch):
    """A signal held, then a second one just after the block's count went to 0 (before it
    raised the first): the second is raised at once, and the first must not stay pending,
    to be raised by the next held block of this process (a later command run in process)."""
    monkeypatch.setattr(interrupts, "_pending", [signal.SIGINT])  # the first, held
    with pytest.raises(interrupts.Interrupted):
        interrupts.interrupt(signal.SIGTERM, None)  # the second, no block open
    try:
        with interrupts.held():
            pass
    except interrupts.Interrupted as e:
        pytest.fail(f"the first signal was still pending: {e.signum}")
