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
