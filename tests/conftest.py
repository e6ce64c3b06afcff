"""Shared fixtures: the notebook's files through the mirror, and synthetic-weight nets.

The notebook's files are never committed: tests read them through DEEPDREAM_CAFFE_MIRROR,
which defaults here to ../shared/assets/deepdream-notebook beside the checkout.
"""

import json
import os
import re
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]

# `make test`: the same examples on every run and every clone (a seed from each test's own
# source, no example database), so a clean clone passes or fails the same way each time.
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
# `make fuzz`: fresh randomness on every run; failures are printed as @example(...) to pin.
settings.register_profile("fuzz", derandomize=False, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    """hypothesis's own --hypothesis-profile still wins over the default above."""
    if config.getoption("hypothesis_profile", None):
        settings.load_profile(config.getoption("hypothesis_profile"))


DEFAULT_MIRROR = ROOT.parent / "shared" / "assets" / "deepdream-notebook"
# auduno/deepdraw's notebook and prototxt, read where they lie, never committed
DEEPDRAW = ROOT.parent / "shared" / "assets" / "deepdraw"
# Test images are the notebook's sky, shrunk so that a full 4-octave dream takes about a second.
TEST_SIZE = (128, 72)


@pytest.fixture(scope="session", autouse=True)
def mirror(tmp_path_factory):
    """Point the project at the mirror folder and an empty, private download cache."""
    os.environ.setdefault("DEEPDREAM_CAFFE_MIRROR", str(DEFAULT_MIRROR))
    cache = tmp_path_factory.mktemp("cache")
    os.environ["DEEPDREAM_CAFFE_CACHE"] = str(cache)  # downloads only: pycaffe is found by import
    return os.environ["DEEPDREAM_CAFFE_MIRROR"]


def slow_examples(n):
    """Hypothesis settings for ``n`` examples of a test that runs the CLI or a net: no deadline,
    and neither slowness nor a function-scoped fixture is a health-check failure."""
    from hypothesis import HealthCheck, settings

    return settings(
        max_examples=n,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def notebook_file(name):
    from deepdream_caffe import assets

    try:
        return assets.fetch(assets.NOTEBOOK_ASSETS[name], progress=False)
    except Exception as e:  # no mirror and no network: say so, do not fail
        pytest.skip(f"{name} unavailable ({e}); set DEEPDREAM_CAFFE_MIRROR")


@pytest.fixture(scope="session")
def notebook_images():
    """For tests whose code fetches the notebook's images itself: skipped when unavailable."""
    return [notebook_file(name) for name in ("sky1024px.jpg", "flowers.jpg")]


@pytest.fixture(scope="session")
def sky():
    img = PIL.Image.open(notebook_file("sky1024px.jpg"))
    return np.float32(img.resize(TEST_SIZE, PIL.Image.BILINEAR))


@pytest.fixture(scope="session")
def flowers():
    img = PIL.Image.open(notebook_file("flowers.jpg"))
    return np.float32(img.resize((80, 60), PIL.Image.BILINEAR))


@pytest.fixture(scope="session")
def notebook_cells():
    """The code cells of dream.ipynb, by cell index (deepdream_caffe/lab/notebook.py)."""
    from deepdream_caffe.lab import notebook

    return notebook.code_cells(notebook_file("dream.ipynb"))


@pytest.fixture(scope="session")
def nets(tmp_path_factory):
    """Definitions and seeded synthetic weights for both real architectures."""
    from deepdream_caffe.build import caffe_source_dir
    from deepdream_caffe.lab.synthetic import write_googlenet, write_synthetic_weights

    d = tmp_path_factory.mktemp("nets")
    bvlc = caffe_source_dir() / "models" / "bvlc_googlenet" / "deploy.prototxt"
    places = write_googlenet(d / "places205_like.prototxt", 205, aux_heads=True)
    return {
        "bvlc_googlenet": (bvlc, write_synthetic_weights(bvlc, d / "bvlc_synthetic.caffemodel", 0)),
        "places205_googlenet": (
            places,
            write_synthetic_weights(places, d / "places_synthetic.caffemodel", 1),
        ),
    }


@pytest.fixture
def load(nets):
    """load(model, end, **kw) -> a fresh net with the notebook's mean and channel swap."""
    from deepdream_caffe.models import IMAGENET_MEAN_BGR
    from deepdream_caffe.net import load_net

    def _load(model="bvlc_googlenet", end="inception_4c/output", **kw):
        definition, weights = nets[model]
        return load_net(definition, weights, end, IMAGENET_MEAN_BGR, **kw)

    return _load


FAILING = re.compile(
    r"^(?:Falsifying|Failing) (?:explicit )?(?:example|test case): \w+\(\n(.*?)^\)", re.M | re.S
)


def example_to_pin(notes, fixtures) -> str | None:
    """Hypothesis's report of a failing example (in the exception's notes) as ``@example(...)``,
    without the pytest fixtures it lists beside the drawn arguments."""
    found = FAILING.search("\n".join(map(str, notes)))
    if not found:
        return None
    lines, keep = [], True
    for line in found.group(1).splitlines():
        name = re.match(r"    (\w+)=", line)
        if name:
            keep = name.group(1) not in fixtures
        if keep:
            lines.append(line.replace(",  # or any other generated value", ","))
    return "@example(\n" + "\n".join(lines) + "\n)"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failing property test's example, in the form to paste above it as ``@example``."""
    report = yield
    notes = getattr(call.excinfo.value, "__notes__", []) if call.excinfo else []
    pin = example_to_pin(notes, getattr(item, "funcargs", {}))
    if pin:
        report.sections.append(("pin it: paste above the test", pin))
        item.config.stash.setdefault(PINS, []).append((item.nodeid, pin))
    return report


PINS = pytest.StashKey[list]()


def pytest_terminal_summary(terminalreporter, config):
    for nodeid, pin in config.stash.get(PINS, []):
        terminalreporter.write_sep("-", f"failing example of {nodeid}, to pin")
        terminalreporter.write_line(pin)


def deepdraw_file(name):
    """One of deepdraw's files from the shared assets; skipped (not failed) without them."""
    path = DEEPDRAW / name
    if not path.is_file():
        pytest.skip(f"{path} is not there (deepdraw's files are read from the shared assets)")
    return path


@pytest.fixture(scope="session")
def deepdraw_cells():
    """The code cells of deepdraw.ipynb (nbformat 4), by cell index."""
    nb = json.loads(deepdraw_file("deepdraw.ipynb").read_text())
    return {i: "".join(c["source"]) for i, c in enumerate(nb["cells"]) if c["cell_type"] == "code"}


@pytest.fixture(scope="session")
def draw_net(tmp_path_factory):
    """deepdraw's net as the builder makes it (bvlc_googlenet with the auxiliary classifiers),
    with seeded synthetic weights: (definition, weights)."""
    from deepdream_caffe.googlenet import deepdraw_googlenet
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    d = tmp_path_factory.mktemp("draw")
    definition = d / "deepdraw_googlenet.prototxt"
    definition.write_text(str(deepdraw_googlenet()))
    return definition, write_synthetic_weights(definition, d / "deepdraw_synthetic.caffemodel", 2)
