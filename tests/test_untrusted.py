"""Files we wrote ourselves and read back are untrusted input: a sidecar (``reproduce``) and a
golden bundle's bundle.json (``compare``).

One property: whatever a valid file is mutated into (a wrong type, NaN or infinity, a huge or
negative integer, a key missing or added, a string with a newline, a path with ``..``, nested
junk), the command either still runs it (a verdict on stdout) or ends with exit 1 or 2 and
exactly one line on stderr; it never leaves a file behind, and no input changes (sha256).
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import PIL.Image
import pytest
from conftest import slow_examples
from hypothesis import given
from hypothesis import strategies as st

from deepdream_caffe import cli, environment, sidecar

pytestmark = [pytest.mark.caffe]

# Values no field of ours should take as they are, and some that a field may.
JUNK = st.one_of(
    st.sampled_from(
        [
            None,
            True,
            float("nan"),
            float("inf"),
            -float("inf"),
            2**64,
            -(2**63),
            -1,
            0,
            10**400,
            1e308,
            "",
            "two\nlines",
            "../../outside.png",
            "/tmp/../../outside.png",
            "x" * 5000,
            [],
            {},
        ]
    ),
    st.integers(),
    st.floats(),
    st.text(max_size=12),
    st.recursive(
        st.none() | st.integers() | st.text(max_size=4),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
        max_leaves=6,
    ),
)


@pytest.fixture(autouse=True)
def blas_threads_kept():
    """reproduce sets this process's OpenBLAS thread counts (a mutated sidecar any count):
    put them back, or later tests in this process would dream with other bits."""
    before = [(info["set_threads"], info["blas_threads"]) for info in blas_libraries()]
    yield
    for set_threads, n in before:
        set_threads(n)


def blas_libraries():
    return [info for info in (environment._caffe_blas(), environment._numpy_blas()) if info]


def paths(doc, prefix=()):
    """Every place in a JSON document, as a tuple of keys and indices."""
    out = []
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for key, value in items:
        out.append((*prefix, key))
        out += paths(value, (*prefix, key))
    return out


def mutate(doc, data):
    """One mutation of a copy of ``doc``: a value replaced, a key removed or a key added."""
    doc = json.loads(json.dumps(doc))
    where = data.draw(st.sampled_from(paths(doc)), label="where")
    *parent_keys, last = where
    parent = doc
    for key in parent_keys:
        parent = parent[key]
    how = data.draw(st.sampled_from(["replace", "delete", "add"]), label="how")
    if how == "replace":
        parent[last] = data.draw(JUNK, label="value")
    elif how == "delete":
        del parent[last]
    else:
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[data.draw(st.text(max_size=8), label="key")] = data.draw(JUNK, label="value")
        else:
            parent[last] = data.draw(JUNK, label="value")
    return doc


def hashes(*folders) -> dict:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def run_cli(argv, capsys, monkeypatch, scratch):
    """The command in this process; its temporary files go to ``scratch``."""
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    capsys.readouterr()  # nothing left over from an earlier example
    code = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def check_outcome(code, out, err, verdicts):
    assert "Traceback" not in err, err
    if code == 0 or (code == 1 and out.startswith(verdicts)):  # it ran: a verdict
        assert out.startswith(verdicts), out
        assert len(err.splitlines()) <= 1, err
        return
    assert code in (1, 2), (code, err)
    assert len(err.splitlines()) == 1 and err.startswith("deepdream-caffe: error:"), err
    assert out == "", out


# --- reproduce SIDECAR ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dreamt(tmp_path_factory, sky, nets):
    folder = tmp_path_factory.mktemp("dreamt")
    PIL.Image.fromarray(np.uint8(sky)).save(folder / "in.png")
    definition, weights = nets["bvlc_googlenet"]
    p = subprocess.run(
        [sys.executable, "-m", "deepdream_caffe.cli", "dream", str(folder / "in.png")]
        + ["-o", str(folder / "out.png"), "--seed", "1", "--iter-n", "1", "--octave-n", "1"]
        + ["--model-def", str(definition), "--weights", str(weights), "--threads", "1"],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    return folder, json.loads((folder / "out.png.json").read_text())


@slow_examples(60)
@given(data=st.data())
def test_a_mutated_sidecar_is_run_or_refused_in_one_line(
    dreamt, nets, tmp_path_factory, capsys, monkeypatch, data
):
    folder, record = dreamt
    net_folder = nets["bvlc_googlenet"][1].parent
    before = hashes(folder, net_folder)
    mine = tmp_path_factory.mktemp("mutated")
    scratch = tmp_path_factory.mktemp("scratch")
    path = mine / "out.png.json"
    path.write_text(json.dumps(mutate(record, data)))
    written = path.read_bytes()
    code, out, err = run_cli(["reproduce", path], capsys, monkeypatch, scratch)
    check_outcome(code, out, err, ("bit-identical", "differs"))
    assert hashes(folder, net_folder) == before
    assert sorted(mine.iterdir()) == [path] and path.read_bytes() == written
    assert list(scratch.iterdir()) == []  # reproduce's temporary folder is gone too


def test_the_recorded_job_fields_are_the_jobs():
    """sidecar.JOB_FIELDS (the format) and Job with its DreamParams (the code) agree."""
    from dataclasses import fields

    from deepdream_caffe.job import Job
    from deepdream_caffe.params import DreamParams

    ours = {f.name: str(f.type) for f in fields(Job) if f.name != "params"}
    ours.update({f.name: str(f.type) for f in fields(DreamParams)}, end="str | None")
    assert sidecar.JOB_FIELDS == ours


def test_a_sidecar_does_not_grant_python_layers(dreamt, tmp_path, capsys, monkeypatch):
    """allow_python_layers is a permission of the command line, never of a file."""
    folder, record = dreamt
    record = {**record, "job": {**record["job"], "allow_python_layers": True}}
    (tmp_path / "s.png.json").write_text(json.dumps(record))
    code, out, err = run_cli(["reproduce", tmp_path / "s.png.json"], capsys, monkeypatch, tmp_path)
    assert code == 1 and len(err.splitlines()) == 1 and "--allow-python-layers" in err


# --- compare BUNDLE OTHER.npz -----------------------------------------------------------------
@pytest.fixture(scope="module")
def exported(tmp_path_factory, sky, nets):
    folder = tmp_path_factory.mktemp("bundle")
    PIL.Image.fromarray(np.uint8(sky)).save(folder / "sky.png")
    definition, weights = nets["bvlc_googlenet"]
    p = subprocess.run(
        [sys.executable, "-m", "deepdream_caffe.cli", "export-golden", str(folder / "sky.png")]
        + ["-o", str(folder / "golden"), "--seed", "3", "--iter-n", "1", "--octave-n", "2"]
        + ["--model-def", str(definition), "--weights", str(weights)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stderr
    other = folder / "other"
    other.mkdir()
    (other / "theirs.npz").write_bytes((folder / "golden" / "bundle.npz").read_bytes())
    return folder / "golden", other / "theirs.npz"


@slow_examples(60)
@given(data=st.data())
def test_a_mutated_bundle_json_is_judged_or_refused_in_one_line(
    exported, tmp_path_factory, capsys, monkeypatch, data
):
    golden, theirs = exported
    before = hashes(golden, theirs.parent)
    mine = tmp_path_factory.mktemp("mutated")
    for f in os.listdir(golden):  # the bundle's arrays as they are, its bundle.json mutated
        if f != "bundle.json":
            os.link(golden / f, mine / f)
    meta = json.loads((golden / "bundle.json").read_text())
    (mine / "bundle.json").write_text(json.dumps(mutate(meta, data)))
    listed = hashes(mine)
    code, out, err = run_cli(["compare", mine, theirs], capsys, monkeypatch, mine)
    check_outcome(code, out, err, ("# compare",))
    assert hashes(golden, theirs.parent) == before and hashes(mine) == listed
