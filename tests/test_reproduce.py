"""Sidecars that can repeat a run, ``--threads``, ``reproduce`` and the OpenBLAS kernel choice.

The kernel choice is tested on injected CPU flags and environments: the tests never set
OPENBLAS_CORETYPE in their own process.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import refused, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdream_caffe import environment, report, reproduce, sidecar
from deepdream_caffe.errors import DreamError
from deepdream_caffe.flags import DREAM_NUMBERS

FAST = ["--iter-n", "2", "--octave-n", "2"]
NUMBERS = [name for name, _, _ in DREAM_NUMBERS]  # iter_n ... jitter, as the job names them
AVX512 = {"sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512cd"}
AVX2 = {"sse2", "avx", "avx2", "fma"}


# --- the OpenBLAS kernel, chosen from the CPU flags --------------------------------------
@pytest.mark.parametrize(
    "flags,kernel",
    [
        (AVX512, "SkylakeX"),
        (AVX512 | {"avx512_bf16"}, "SkylakeX"),  # not Cooperlake: its sgemm has other bits
        (AVX2 | {"avx512f"}, "Haswell"),  # AVX-512 F alone: Haswell
        (AVX512 - {"avx512cd"}, "Haswell"),
        (AVX2, "Haswell"),
        (AVX2 - {"fma"}, None),
        ({"sse2", "sse4_2", "avx"}, None),  # no AVX2: OpenBLAS's own choice
        (set(), None),
    ],
)
def test_the_kernel_follows_the_instruction_sets(flags, kernel):
    assert environment.coretype_for(flags) == kernel
    env = {}
    environment.choose_blas_kernel(env, flags)
    assert env == ({"OPENBLAS_CORETYPE": kernel} if kernel else {})
    assert environment.kernel_chosen_by(env, flags) == ("cpu flags" if kernel else "OpenBLAS")


@given(
    asked=st.sampled_from(["Prescott", "Haswell", "SkylakeX", "Zen", "Cooperlake"]),
    flags=st.sets(st.sampled_from(sorted(AVX512 | {"sse4_2", "avx512_bf16"}))),
)
def test_a_users_coretype_is_kept(asked, flags):
    env = {"OPENBLAS_CORETYPE": asked}
    environment.choose_blas_kernel(env, flags)
    assert env == {"OPENBLAS_CORETYPE": asked}
    by = environment.kernel_chosen_by(env, flags)
    assert by == ("cpu flags" if asked == environment.coretype_for(flags) else "OPENBLAS_CORETYPE")


KERNEL_RUN = (
    "from deepdream_caffe import definition, environment\n"
    "definition.import_caffe()\n"
    "info = environment.blas_info()\n"
    "print(info['blas_kernel'], info['blas_kernel_chosen_by'], sep='|')\n"
)


@pytest.mark.caffe
@pytest.mark.parametrize("asked", ["", "Prescott"])
def test_caffes_openblas_runs_the_kernel_chosen_for_it(asked):
    """In a fresh process: the flags' kernel when OPENBLAS_CORETYPE is unset, else the user's."""
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    if asked:
        env["OPENBLAS_CORETYPE"] = asked
    p = subprocess.run([sys.executable, "-c", KERNEL_RUN], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    kernel, by = p.stdout.strip().split("|")
    chosen = environment.coretype_for(environment.cpu_flags())
    if asked:
        assert (kernel, by) == (asked, "OPENBLAS_CORETYPE")
    elif chosen:
        assert (kernel, by) == (chosen, "cpu flags")
    else:
        assert by == "OpenBLAS"


@pytest.mark.caffe
def test_info_shows_both_blas_kernels_and_who_chose_caffes(capsys):
    from deepdream_caffe import cli

    kernel = environment.blas_info()["blas_kernel"]
    assert cli.main(["info"]) == 0
    out, err = capsys.readouterr()
    for key in ("blas_kernel", "blas_kernel_chosen_by", "numpy_blas_kernel", "glibc", "cpu"):
        assert f"\n{key} " in out, key
    assert kernel in out and err == ""


# --- naming what differs ----------------------------------------------------------------
def record(**env):
    base = {
        "blas_kernel": "Haswell",
        "blas_threads": 1,
        "numpy": "2.4.6",
        "glibc": "glibc 2.36",
        "caffe_cmake_flags": ["-DPYTHON_EXECUTABLE=/a/.venv/bin/python", "-DBLAS=Open"],
    }
    return {
        "environment": {**base, **env},
        "device": "cpu",
        "weights": {"sha256": "w"},
        "definition": {"sha256": "d"},
    }


def test_differing_factors_are_named_with_both_values():
    factors = reproduce.differing_factors(
        record(), record(blas_threads=2, blas_kernel="Prescott", glibc="glibc 2.41")
    )
    assert factors == [
        "BLAS kernel (recorded Haswell, here Prescott: run with OPENBLAS_CORETYPE=Haswell)",
        "BLAS threads (recorded 1, here 2)",
        "glibc (recorded glibc 2.36, here glibc 2.41)",
    ]


def test_the_virtualenv_path_in_the_build_flags_is_no_factor():
    other = record(caffe_cmake_flags=["-DPYTHON_EXECUTABLE=/b/.venv/bin/python", "-DBLAS=Open"])
    assert reproduce.differing_factors(record(), other) == []
    other = record(caffe_cmake_flags=["-DPYTHON_EXECUTABLE=/a/.venv/bin/python", "-DBLAS=MKL"])
    assert [f.split(" (")[0] for f in reproduce.differing_factors(record(), other)] == [
        "Caffe build flags"
    ]


def test_verdict_lines():
    assert reproduce.Verdict(True, "", ()).line == "bit-identical"
    line = reproduce.Verdict(
        False, "raw: max |difference| 3", ("BLAS threads (recorded 1, here 2)",)
    ).line
    assert line.startswith("differs (raw: max |difference| 3)") and "BLAS threads" in line
    assert "every recorded factor matches" in reproduce.Verdict(False, "x", ()).line


# --- a sidecar is untrusted input -------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=60, deadline=None)
@given(data=JSON)
def test_any_json_that_is_not_a_sidecar_is_one_clear_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("s") / "x.png.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DreamError, match="not a deepdream-caffe sidecar"):
        sidecar.read(path)


@settings(max_examples=80, deadline=None)
@given(
    name=st.sampled_from(
        [*NUMBERS, "seed", "max_size", "jpeg_quality", "threads", "clip", "input", "mean"]
    ),
    value=JSON,
)
def test_a_broken_job_field_is_refused_or_valid(name, value):
    record = {
        "command": "dream",
        "seed": 1,
        "job": {"command": "dream", "input": "/in.png", "output": "/o.png"},
        "environment": {},
    }
    record["job"][name] = value
    try:
        job = reproduce.rebuild(record, Path("/nowhere"))
    except DreamError as e:
        assert "job field" in str(e) or "not a valid" in str(e)
        return
    where = job.params if hasattr(job.params, name) else job
    got = getattr(where, name) if name != "threads" else value  # threads: from environment
    if name in ("iter_n", "octave_n", "jpeg_quality", "max_size") and got is not None:
        assert isinstance(got, int) and got >= 1
    if name in ("octave_scale", "step_size", "jitter") and got is not None:
        assert np.isfinite(got) and got >= 0


def test_a_folder_or_a_missing_file_is_named(tmp_path):
    with pytest.raises(DreamError, match="is a folder"):
        sidecar.read(tmp_path)
    with pytest.raises(DreamError, match="does not exist"):
        sidecar.read(tmp_path / "none.png.json")


def test_the_command_line_is_recorded_as_typed():
    line = report.command_line(["dream", Path("my sky.jpg"), "-o", "o.png", "--seed", "3"])
    assert line == "deepdream-caffe dream 'my sky.jpg' -o o.png --seed 3"


def test_an_old_sidecar_says_to_run_again(tmp_path):
    path = tmp_path / "old.png.json"
    path.write_text(json.dumps({"command": "dream", "params": {}, "seed": 1}))
    with pytest.raises(DreamError, match="before sidecars recorded the whole job"):
        sidecar.read(path)


# --- end to end, as users run it ---------------------------------------------------------
def synthetic(nets):
    """The flags of the synthetic bvlc_googlenet."""
    definition, weights = nets["bvlc_googlenet"]
    return ["--model-def", definition, "--weights", weights]


def run(*args, check=True, env=None):
    return run_cli(*args, check=check, env=env)


@pytest.fixture
def dreamt(tmp_path, sky, nets):
    """A seeded dream with --threads 1, --raw and a JPEG output, as a user would run it."""
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    out = tmp_path / "out.jpg"
    run(
        "dream",
        tmp_path / "in.png",
        "-o",
        out,
        "--seed",
        4,
        "--threads",
        1,
        "--raw",
        tmp_path / "raw.npy",
        "--jpeg-quality",
        80,
        *synthetic(nets),
        *FAST,
    )
    return tmp_path, out, json.loads((tmp_path / "out.jpg.json").read_text())


@pytest.mark.caffe
def test_the_sidecar_records_what_repeats_the_run(dreamt, nets):
    folder, out, side = dreamt
    assert side["command_line"].startswith("deepdream-caffe dream ")
    assert "--threads 1" in side["command_line"] and side["started_utc"].endswith("+00:00")
    assert side["duration_s"] > 0 and side["environment"]["blas_threads"] == 1
    assert side["job"]["jpeg_quality"] == 80 and side["job"]["max_size"] is None
    assert side["job"]["threads"] == 1 and side["job"]["seed"] == 4
    assert side["input"]["path"] == str(folder / "in.png")
    assert side["outputs"]["image"]["sha256"] == sidecar.file_hash(out, "sha256")
    assert side["outputs"]["raw"]["sha256"] == sidecar.file_hash(folder / "raw.npy", "sha256")
    assert side["outputs"]["image"]["path"] == str(out)
    assert side["weights"]["provenance"].startswith("synthetic")
    assert side["weights"]["path"] == str(nets["bvlc_googlenet"][1])
    for key in ("glibc", "numpy_blas", "blas_kernel", "caffe_source_sha256", "cpu"):
        assert side["environment"][key], key
    assert sorted(p.name for p in folder.iterdir()) == [
        "in.png",
        "out.jpg",
        "out.jpg.json",
        "raw.npy",
    ]


@pytest.mark.caffe
def test_reproduce_says_bit_identical(dreamt):
    folder, out, _ = dreamt
    before = {p: p.read_bytes() for p in folder.iterdir()}
    p = run("reproduce", folder / "out.jpg.json")
    assert p.stdout.strip().startswith("bit-identical"), p.stdout
    assert {p: p.read_bytes() for p in folder.iterdir()} == before  # nothing written there


@pytest.mark.caffe
def test_reproduce_names_the_factor_that_differs(dreamt):
    """A recorded numpy version that is not this one, and a result that is not this one."""
    folder, out, side = dreamt
    raw = np.load(folder / "raw.npy")
    np.save(folder / "raw.npy", raw + np.float32(1))
    side["outputs"]["raw"]["sha256"] = sidecar.file_hash(folder / "raw.npy", "sha256")
    side["environment"]["numpy"] = "1.0.0"
    (folder / "out.jpg.json").write_text(json.dumps(side))
    p = run("reproduce", folder / "out.jpg.json", check=False)
    assert p.returncode == 1
    assert p.stdout.startswith("differs (raw: max |difference| 1 ")
    assert f"numpy (recorded 1.0.0, here {np.__version__})" in p.stdout
    assert len(p.stdout.strip().splitlines()) == 1


@pytest.mark.caffe
def test_reproduce_refuses_a_changed_input(dreamt):
    folder, _, _ = dreamt
    PIL.Image.fromarray(np.zeros((72, 128, 3), np.uint8)).save(folder / "in.png")
    refused(
        "reproduce",
        folder / "out.jpg.json",
        words=["has changed since the run"],
        watch=[folder],
        codes=(1,),
    )


@pytest.mark.caffe
def test_reproduce_a_zoom(tmp_path, sky, nets):
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    run(
        "zoom",
        tmp_path / "in.png",
        "-o",
        tmp_path / "frames",
        "--frames",
        2,
        "--seed",
        1,
        *synthetic(nets),
        *FAST,
    )
    side = json.loads((tmp_path / "frames" / "zoom.json").read_text())
    assert sorted(side["outputs"]) == ["0000.png", "0001.png"] and side["command_line"]
    assert run("reproduce", tmp_path / "frames" / "zoom.json").stdout.startswith("bit-identical")


@pytest.mark.caffe
def test_reproduce_a_guided_dream(tmp_path, sky, flowers, nets):
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    PIL.Image.fromarray(np.uint8(flowers)).save(tmp_path / "guide.png")
    run(
        "guide",
        tmp_path / "in.png",
        tmp_path / "guide.png",
        "-o",
        tmp_path / "g.png",
        "--seed",
        3,
        *synthetic(nets),
        *FAST,
    )
    side = json.loads((tmp_path / "g.png.json").read_text())
    assert side["guide"]["path"] == str(tmp_path / "guide.png")
    assert run("reproduce", tmp_path / "g.png.json").stdout.startswith("bit-identical")
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "guide.png")  # another guide
    refused(
        "reproduce",
        tmp_path / "g.png.json",
        words=["the guide file", "has changed"],
        watch=[tmp_path],
        codes=(1,),
    )


@pytest.mark.caffe
def test_threads_change_the_bits_and_are_recorded(tmp_path, sky, nets):
    """Why --threads exists: one OpenBLAS thread and two give different dreams."""
    PIL.Image.fromarray(np.uint8(sky)).save(tmp_path / "in.png")
    raws = {}
    for n in (1, 2):
        run(
            "dream",
            tmp_path / "in.png",
            "-o",
            tmp_path / f"t{n}.png",
            "--seed",
            0,
            "--threads",
            n,
            "--raw",
            tmp_path / f"t{n}.npy",
            *synthetic(nets),
        )
        raws[n] = np.load(tmp_path / f"t{n}.npy")
        side = json.loads((tmp_path / f"t{n}.png.json").read_text())
        assert side["environment"]["blas_threads"] == n
        assert side["environment"]["numpy_blas_threads"] == n
    assert not np.array_equal(raws[1], raws[2])


@pytest.mark.caffe
def test_export_golden_bundle_carries_the_shared_fields(tmp_path, nets, notebook_images):
    run(
        "export-golden",
        "--out",
        tmp_path / "b",
        *synthetic(nets),
        "--size",
        "64x48",
        "--seed",
        0,
        *FAST,
    )
    meta = json.loads((tmp_path / "b" / "bundle.json").read_text())
    shared = meta["run"]
    assert shared["outputs"]["bundle.npz"]["sha256"] == sidecar.file_hash(
        tmp_path / "b" / "bundle.npz", "sha256"
    )
    for key in ("command_line", "started_utc", "duration_s", "job", "environment"):
        assert shared[key] is not None, key
    assert shared["weights"]["provenance"].startswith("synthetic")
    assert "deepdream" in meta["order"] and "conv1/7x7_s2/0" in meta["weights"]  # the bundle's


@pytest.mark.caffe
@settings(max_examples=25, deadline=None)
@given(
    field=st.sampled_from(
        [
            *NUMBERS,
            "clip",
            "end",
            "model",
            "mean",
            "channel_swap",
            "jpeg_quality",
            "input",
            "output",
            "command",
            "format",
            "gpu",
            "max_size",
        ]
    ),
    value=JSON,
)
def test_a_tampered_sidecar_is_repeated_or_refused_in_one_line(dreamt_once, field, value):
    """Whatever a job field holds, reproduce gives a verdict or one DreamError, nothing else."""
    folder, side = dreamt_once
    side = json.loads(json.dumps(side))
    side["job"][field] = value
    (folder / "tampered.png.json").write_text(json.dumps(side))
    try:
        verdict = reproduce.reproduce(folder / "tampered.png.json", say=lambda _: None)
    except DreamError as e:
        assert "\n" not in str(e)
    else:
        assert verdict.line.startswith(("bit-identical", "differs"))
    assert not list(folder.glob(".*")) and not (folder / "tampered.png").exists()


@pytest.fixture(scope="module")
def dreamt_once(tmp_path_factory, sky, nets):
    folder = tmp_path_factory.mktemp("once")
    PIL.Image.fromarray(np.uint8(sky)).save(folder / "in.png")
    run(
        "dream",
        folder / "in.png",
        "-o",
        folder / "out.png",
        "--seed",
        2,
        *synthetic(nets),
        "--iter-n",
        "1",
        "--octave-n",
        "1",
    )
    return folder, json.loads((folder / "out.png.json").read_text())


def test_weights_provenance(tmp_path, monkeypatch):
    """Published (matched by checksum, or fetched and verified), synthetic, or the user's."""
    from deepdream_caffe import models
    from deepdream_caffe.assets import Asset
    from deepdream_caffe.job import Job
    from deepdream_caffe.plan import weights_provenance

    def provenance(path, job):
        return weights_provenance(path, path.read_bytes(), job)

    mine = tmp_path / "mine.caffemodel"
    mine.write_bytes(b"weights of my own")
    assert provenance(mine, Job(weights=mine)).startswith("user")
    synthetic = tmp_path / "net.SYNTHETIC-seed0.caffemodel"
    synthetic.write_bytes(b"x")
    assert provenance(synthetic, Job(weights=synthetic)).startswith("synthetic")
    published = models.ModelRecord(
        "bvlc_googlenet",
        "stand-in",
        Asset(
            "mine.caffemodel",
            "http://example.invalid/m",
            "sha1:" + sidecar.file_hash(mine, "sha1"),
            mine.stat().st_size,
        ),
        1000,
        "unrestricted",
    )
    monkeypatch.setitem(models.MODELS, "bvlc_googlenet", published)
    assert provenance(mine, Job(weights=mine)).startswith(
        "published: bvlc_googlenet, matched by sha1:"
    )
    # fetched by models.model_files, and verified there
    assert provenance(mine, Job()).startswith("published: bvlc_googlenet, verified by")


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, {"GOMP_SPINCOUNT": "10000"}),
        ({"OMP_WAIT_POLICY": "active"}, {"OMP_WAIT_POLICY": "active"}),
        ({"GOMP_SPINCOUNT": "300000"}, {"GOMP_SPINCOUNT": "300000"}),
    ],
)
def test_openmp_threads_spin_briefly_unless_the_user_said_how_they_wait(given, expected):
    environ = dict(given)
    environment.choose_wait_policy(environ)
    assert environ == expected


@pytest.mark.parametrize(
    "given",
    [
        {},
        {"OMP_DYNAMIC": "true"},
        {"OMP_DYNAMIC": "TRUE", "OMP_THREAD_LIMIT": "1"},
        {"OMP_DYNAMIC": "false", "OMP_MAX_ACTIVE_LEVELS": "0"},
        {"OMP_DYNAMIC": "nonsense", "OMP_THREAD_LIMIT": "2", "OMP_MAX_ACTIVE_LEVELS": "1"},
    ],
)
def test_openmp_teams_are_never_shrunk(given):
    environ = {**given, "OMP_PROC_BIND": "true"}
    environment.keep_thread_teams_whole(environ)
    assert environ == {"OMP_DYNAMIC": "false", "OMP_PROC_BIND": "true"}
