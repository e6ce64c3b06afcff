"""Output paths against inputs, as a class (issue 19): whatever a command would write (its
image, the sidecar ``OUT.png.json``, ``--save-steps`` images, ``compare --report``) never
replaces a file it was given or one already there; each such case is refused by the contract
of tests/helpers.py (one line, exit 1 or 2, no file in the folder written or changed).

Hypothesis draws the case, the names and which step image collides; the command runs in a
process of its own.
"""

import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from conftest import slow_examples
from helpers import refused
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.caffe
OCTAVES, STEPS = 2, 2
FAST = ["--iter-n", STEPS, "--octave-n", OCTAVES, "--seed", 0]
NAME = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
CASES = [
    "output is the input",
    "output is the guide",
    "output under a file",
    "output is a folder",
    "sidecar is the input",
    "sidecar is the guide",
    "steps folder holds a step's name",
    "steps folder is a file",
    "input is a step image",
    "output is a step image",
    "report is the arrays",
    "report is a bundle file",
    "report is the bundle folder",
]


@pytest.fixture(scope="module")
def png():
    """A small image's PNG bytes (what sits at every input path)."""
    buf = io.BytesIO()
    rng = np.random.RandomState(0)
    PIL.Image.fromarray(rng.randint(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def step_name(octave, step):
    return f"octave{octave}_step{step:02d}.png"


def case_argv(case, d, name, octave, step, png):
    """Lay out the folder ``d`` for ``case``; return the command's arguments (model left out)."""
    image, guide = d / f"{name}.png", d / f"{name}_guide.png"
    steps = d / f"{name}_steps"
    for path in (image, guide):
        path.write_bytes(png)
    out = d / f"{name}_out.png"
    if case == "output is the input":
        return ["dream", image, "-o", image]
    if case == "output is the guide":
        return ["guide", image, guide, "-o", guide]
    if case == "output under a file":  # a file where a folder should be
        return ["dream", image, "-o", image / "o.png"]
    if case == "output is a folder":
        out.mkdir()
        return ["dream", image, "-o", out]
    if case == "sidecar is the input":  # an image named OUT.png.json, dreamt into OUT.png
        (d / f"{out.name}.json").write_bytes(png)
        return ["dream", d / f"{out.name}.json", "-o", out]
    if case == "sidecar is the guide":
        (d / f"{out.name}.json").write_bytes(png)
        return ["guide", image, d / f"{out.name}.json", "-o", out]
    if case == "steps folder holds a step's name":  # a user's file, not an earlier step
        steps.mkdir()
        (steps / step_name(octave, step)).write_text("my notes")
        return ["dream", image, "-o", out, "--save-steps", steps]
    if case == "steps folder is a file":
        return ["dream", image, "-o", out, "--save-steps", guide]
    if case == "input is a step image":
        steps.mkdir()
        (steps / step_name(octave, step)).write_bytes(png)
        return ["dream", steps / step_name(octave, step), "-o", out, "--save-steps", steps]
    if case == "output is a step image":
        steps.mkdir()
        return ["dream", image, "-o", steps / step_name(octave, step), "--save-steps", steps]
    bundle, arrays = d / f"{name}_bundle", d / f"{name}.npz"
    bundle.mkdir()
    for part in ("bundle.json", "bundle.npz", "net.prototxt"):
        (bundle / part).write_text(part)
    np.savez(arrays, data=np.zeros(3, np.float32))
    report = {
        "report is the arrays": arrays,
        "report is a bundle file": bundle / ("bundle.json", "bundle.npz")[step],
        "report is the bundle folder": bundle,
    }[case]
    return ["compare", bundle, arrays, "--report", report]


@slow_examples(40)
@given(
    case=st.sampled_from(CASES),
    name=NAME,
    octave=st.integers(0, OCTAVES - 1),
    step=st.integers(0, STEPS - 1),
)
def test_no_output_replaces_an_input(case, name, octave, step, tmp_path_factory, png, nets):
    d = tmp_path_factory.mktemp("paths")
    argv = case_argv(case, d, name, octave, step, png)
    definition, weights = nets["bvlc_googlenet"]
    model = [] if argv[0] == "compare" else ["--model-def", definition, "--weights", weights]
    refused(*argv, *model, *(FAST if model else []), watch=[d])


def test_step_images_of_an_earlier_run_are_not_replaced(tmp_path, png, nets):
    """The named hole: --save-steps overwrote a file named like a step image."""
    (tmp_path / "in.png").write_bytes(png)
    steps = tmp_path / "steps"
    steps.mkdir()
    (steps / "octave1_step01.png").write_text("mine")
    definition, weights = nets["bvlc_googlenet"]
    argv = ["dream", tmp_path / "in.png", "-o", tmp_path / "o.png", "--save-steps", steps]
    argv += ["--model-def", definition, "--weights", weights, *FAST]
    line = refused(*argv, words=["octave1_step01.png"], watch=[tmp_path], codes=(1,))
    assert "--save-steps" in line
    assert (steps / "octave1_step01.png").read_text() == "mine"


@pytest.mark.parametrize("which", ["--model-def", "--weights"])
def test_no_output_replaces_the_definition_or_the_weights(nets, tmp_path, png, which):
    """The sidecar OUT.png.json, or --raw, named like a file the run reads: refused."""
    definition, weights = nets["bvlc_googlenet"]
    given = {"--model-def": definition, "--weights": weights}
    taken = tmp_path / "o.png.json"
    taken.write_bytes(Path(given[which]).read_bytes())
    given[which] = taken
    (tmp_path / "in.png").write_bytes(png)
    model = ["--model-def", given["--model-def"], "--weights", given["--weights"]]
    args = ["dream", tmp_path / "in.png", "-o", tmp_path / "o.png", *model, *FAST]
    refused(*args, words=["is the input"], watch=[tmp_path])
    raw = tmp_path / "w.npy"
    raw.write_bytes(Path(given[which]).read_bytes())
    model[model.index(which) + 1] = raw
    args = ["dream", tmp_path / "in.png", "-o", tmp_path / "p.png", "--raw", raw, *model, *FAST]
    refused(*args, words=["is the input"], watch=[tmp_path])
