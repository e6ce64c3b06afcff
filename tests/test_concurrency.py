"""Two things at once: another command, or the user, working on the same files while a
command runs. Each interleaving is forced in process (monkeypatch), not left to timing; each
case below failed before its fix."""

import hashlib
import json
import os
import threading
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import main_in_process

pytestmark = pytest.mark.caffe
FAST = ["--iter-n", "1", "--octave-n", "1"]


@pytest.fixture
def work(tmp_path, sky, nets):
    """A folder with an input image, and the flags for the synthetic bvlc_googlenet."""
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    definition, weights = nets["bvlc_googlenet"]
    return tmp_path, ["--model-def", str(definition), "--weights", str(weights)]


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_two_dreams_into_one_output_leave_a_pair_of_one_run(work, monkeypatch):
    """Before: another dream's renames between this one's image and its sidecar left the
    other's image beside this one's sidecar (its recorded sha256 not the image's)."""
    from deepdream_caffe import imageio

    folder, model = work
    out = folder / "o.png"
    other = []

    def other_dream():  # another command's result landing on the same names
        with imageio.all_or_nothing() as batch:
            imageio.save_image(np.zeros((8, 8, 3), np.uint8), out, batch=batch)
            imageio.save_json({"other": True}, Path(str(out) + ".json"), batch)

    real_replace = os.replace

    def replace(src, dst):
        real_replace(src, dst)
        if Path(dst) == out and not other:  # this run's image is in place, its sidecar not yet
            other.append(threading.Thread(target=other_dream))
            other[0].start()
            other[0].join(timeout=2)  # done at once, unless it waits for this run's renames

    monkeypatch.setattr(os, "replace", replace)
    p = main_in_process("dream", folder / "in.png", "-o", out, *FAST, "--seed", "0", *model)
    other[0].join()
    assert p.returncode == 0, p.stderr
    record = json.loads((folder / "o.png.json").read_text())
    if record.get("other"):  # the other run renamed last: its pair, whole
        with PIL.Image.open(out) as im:
            assert im.size == (8, 8)
    else:
        assert record["outputs"]["image"]["sha256"] == sha256(out)


@pytest.mark.parametrize("edit", ["replaced", "deleted"])
@pytest.mark.parametrize("command", ["dream", "zoom"])
def test_inputs_edited_mid_run_are_recorded_as_dreamt(work, monkeypatch, flowers, command, edit):
    """Before: the sidecar hashed the input and the definition when it was written, after the
    dream: edited mid-run, it recorded the new files' sha256 (and reproduce said "differs,
    although every recorded factor matches"); deleted mid-run, the finished dream was lost
    with "[Errno 2] No such file or directory"."""
    from deepdream_caffe import job

    folder, model = work
    definition = folder / "net.prototxt"
    definition.write_bytes(Path(model[1]).read_bytes())
    model[1] = str(definition)
    image = folder / "in.png"
    dreamt = {"input": sha256(image), "definition": sha256(definition)}
    other = folder / "other.png"
    with PIL.Image.open(image) as im:
        PIL.Image.fromarray(np.uint8(flowers)).resize(im.size).save(other)
    real_run = job.worker.run

    def run(*args, **kwargs):  # the user edits the files while Caffe dreams
        if edit == "replaced":
            os.replace(other, image)
            with definition.open("a") as f:
                f.write("# edited\n")
        else:
            image.unlink()
            definition.unlink()
        return real_run(*args, **kwargs)

    monkeypatch.setattr(job.worker, "run", run)
    out = folder / ("o.png" if command == "dream" else "frames")
    extra = ["--frames", "2"] if command == "zoom" else []
    p = main_in_process(command, image, "-o", out, *FAST, *extra, "--seed", "0", *model)
    assert p.returncode == 0, p.stderr
    record = json.loads(
        Path(f"{out}.json" if command == "dream" else out / "zoom.json").read_text()
    )
    assert {k: record[k]["sha256"] for k in dreamt} == dreamt


def test_an_input_resized_between_its_header_and_its_pixels_is_refused(work, monkeypatch):
    """Before: an input replaced after the plan read its header was dreamt at the new size,
    past the size and memory checks made for the old one."""
    from deepdream_caffe import job

    folder, model = work
    image = folder / "in.png"
    real_plan = job.plan_images

    def plan_images(*args, **kwargs):
        plan = real_plan(*args, **kwargs)
        PIL.Image.new("RGB", (300, 200)).save(folder / "big.png")
        os.replace(folder / "big.png", image)
        return plan

    monkeypatch.setattr(job, "plan_images", plan_images)
    p = main_in_process("dream", image, "-o", folder / "o.png", *FAST, "--seed", "0", *model)
    assert p.returncode == 1
    assert p.stderr.count("\n") == 1 and "changed while it was read" in p.stderr, p.stderr
    assert not (folder / "o.png").exists()


def test_a_second_zoom_into_a_folder_being_written_is_refused(work, monkeypatch):
    """Before: two zooms into one new folder both passed its check, wrote their frames over
    each other and both said "wrote N frames"; zoom.json then hashed the other run's frames
    as its own (reproduce: "differs ... although every recorded factor matches")."""
    from deepdream_caffe import job

    folder, model = work
    frames = folder / "frames"
    real_run = job.worker.run
    second = []

    def run(*args, **kwargs):  # the first zoom holds its folder; the second starts now
        if not second:
            second.append(None)  # once: the second zoom's own run goes straight on
            second[0] = zoom("--seed", "1")
        return real_run(*args, **kwargs)

    def zoom(*flags):
        return main_in_process("zoom", folder / "in.png", "-o", frames, *FAST, "--frames", "2",
                               *flags, *model)  # fmt: skip

    monkeypatch.setattr(job.worker, "run", run)
    first = zoom("--seed", "0")
    assert first.returncode == 0, first.stderr
    assert second[0].returncode == 1, second[0].stderr
    assert second[0].stderr.count("\n") == 1 and "another command is writing" in second[0].stderr
    record = json.loads((frames / "zoom.json").read_text())
    assert record["seed"] == 0
    assert all(sha256(frames / k) == v["sha256"] for k, v in record["outputs"].items())


def test_a_folder_that_cannot_be_locked_is_written_unlocked(tmp_path, monkeypatch):
    """Some file systems (NFS without locks) refuse flock with ENOLCK: a zoom goes on as
    before the lock existed, rather than failing."""
    import errno
    import fcntl

    from deepdream_caffe import imageio
    from deepdream_caffe.errors import DreamError

    def no_locks(fd, how):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    ran = []
    with imageio.folder_held(tmp_path, DreamError("busy", "wait")):
        ran.append(True)
    assert ran


@pytest.mark.parametrize("edit", ["replaced", "deleted"])
def test_draws_files_edited_mid_run_are_recorded_as_read(tmp_path, draw_net, monkeypatch, edit):
    """Before: draw hashed its start image, definition and schedule when it wrote the
    sidecar: edited mid-run, they were recorded as they were then, not as drawn."""
    from deepdream_caffe import draw, drawjob

    definition = tmp_path / "net.prototxt"
    definition.write_bytes(Path(draw_net[0]).read_bytes())
    schedule = tmp_path / "short.json"
    schedule.write_text(json.dumps([dict(draw.BLOG[0], iter_n=1)]))
    start = tmp_path / "start.png"
    PIL.Image.fromarray(np.uint8(np.random.RandomState(0).rand(240, 240, 3) * 255)).save(start)
    read = {"start": sha256(start), "definition": sha256(definition), "schedule": sha256(schedule)}
    real_run = drawjob.worker.run

    def run(*args, **kwargs):  # the user edits the files while Caffe draws
        for path in (start, definition, schedule):
            if edit == "replaced":
                path.write_bytes(path.read_bytes() + b"\n")
            else:
                path.unlink()
        return real_run(*args, **kwargs)

    monkeypatch.setattr(drawjob.worker, "run", run)
    out = tmp_path / "d.png"
    flags = ["--schedule", schedule, "--model-def", definition, "--weights", draw_net[1]]
    p = main_in_process("draw", 13, "-o", out, "--start", start, *flags, "--seed", "1")
    assert p.returncode == 0, p.stderr
    record = json.loads((tmp_path / "d.png.json").read_text())
    assert {k: record[k]["sha256"] for k in read} == read


def test_export_goldens_input_edited_mid_run_is_recorded_as_read(work, monkeypatch, flowers):
    """Before: export-golden hashed its input and definition for bundle.json after the run."""
    from deepdream_caffe import worker

    folder, model = work
    image = folder / "in.png"
    read = sha256(image)
    real_run = worker.run

    def run(*args, **kwargs):
        PIL.Image.fromarray(np.uint8(flowers)).save(image)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(worker, "run", run)
    out = folder / "bundle"
    p = main_in_process("export-golden", image, "-o", out, *FAST, "--seed", "0", *model)
    assert p.returncode == 0, p.stderr
    bundle = json.loads((out / "bundle.json").read_text())
    assert bundle["source"]["input"]["sha256"] == read
    assert bundle["run"]["input"]["sha256"] == read


def test_outputs_in_one_folder_named_two_ways_do_not_wait_for_themselves(tmp_path, monkeypatch):
    """An image and its --raw in one folder, one of them through a symbolic link: the batch
    locks the folder once (it would otherwise wait out its own lock)."""
    from deepdream_caffe import imageio

    def no_waiting(seconds):
        raise AssertionError("the batch waited for a lock it holds itself")

    monkeypatch.setattr(imageio.time, "sleep", no_waiting)
    (tmp_path / "out").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "out")
    with imageio.all_or_nothing() as batch:
        batch(tmp_path / "out" / "a.png").write_bytes(b"image")
        batch(tmp_path / "link" / "a.npy").write_bytes(b"raw")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.npy", "a.png"]
