"""``deepdream-caffe sweep`` on real Dask clusters: the grid, failures, resume, Ctrl-C, a killed
worker, bit-identity with ``dream``, and the gallery in headless Chromium; and draw sweeps
(``--classes``): bit-identity with ``draw``, resume, Ctrl-C, bad classes and refused flags.

The clusters are real: an embedded LocalCluster of worker processes, and separate ``dask
scheduler`` / ``dask worker`` processes on 127.0.0.1. Images are 128x72 and dreams short
(2 octaves x 2 steps), so a task takes about a second.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import PIL.Image
import pytest
from helpers import CLI, Snapshot, assert_refused, main_in_process, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from deepdream_caffe import cli, sweep
from deepdream_caffe.lab.sweepbench import kill_when_busy, separate_cluster

pytestmark = pytest.mark.caffe
FAST = ["--iter-n", "2", "--octave-n", "2"]
ENDS = ["inception_3a/output", "inception_4c/output"]
SEEDS = [0, 1, 2]
BLAS1 = {**os.environ, "OPENBLAS_NUM_THREADS": "1"}  # the sweep's workers use 1 by default


def deepdream_caffe(*args, **kw):
    return run_cli(*args, env={"OPENBLAS_NUM_THREADS": "1"}, **kw)


@pytest.fixture(scope="module")
def files(tmp_path_factory, sky, nets):
    """The sky at 128x72, a 16x16 image too small for inception_4c, the model flags."""
    d = tmp_path_factory.mktemp("inputs")
    PIL.Image.fromarray(np.uint8(sky)).save(d / "sky.png")
    PIL.Image.fromarray(np.uint8(sky[:16, :16])).save(d / "tiny.png")
    definition, weights = nets["bvlc_googlenet"]
    return {
        "sky": d / "sky.png",
        "tiny": d / "tiny.png",
        "model": ["--model-def", definition, "--weights", weights],
    }


def sweep_args(files, out, *inputs, seeds=SEEDS):
    return [
        "sweep",
        *(inputs or (files["sky"], files["tiny"])),
        "-o",
        out,
        *files["model"],
        "--ends",
        ",".join(ENDS),
        "--seeds",
        ",".join(map(str, seeds)),
        *FAST,
    ]


def manifest(out):
    return {r["name"]: r for r in json.loads((out / "manifest.json").read_text())["tasks"]}


def image_size(path):
    with PIL.Image.open(path) as im:
        im.load()
        return im.size


def results(out):
    """name -> PNG bytes of every result in the folder."""
    return {p.name: p.read_bytes() for p in (out / "images").glob("*.png")}


@pytest.fixture(scope="module")
def local(tmp_path_factory, files):
    """One sweep on an embedded LocalCluster of 2 worker processes: 12 tasks, 3 fail."""
    out = tmp_path_factory.mktemp("local") / "sweep"
    p = deepdream_caffe(*sweep_args(files, out), "--workers", "2")
    return out, p


@pytest.mark.slow  # runs a Dask cluster
def test_the_local_cluster_runs_every_combination(local, files):
    out, p = local
    rows = manifest(out)
    assert len(rows) == 2 * len(ENDS) * len(SEEDS)
    done = {n: r for n, r in rows.items() if r["status"] == "done"}
    assert len(done) == 9  # tiny.png is too small for inception_4c only
    for name, row in done.items():
        side = json.loads((out / row["sidecar"]).read_text())
        assert side["seed"] == row["seed"] and side["params"]["end"] == row["end"]
        assert side["params"]["iter_n"] == 2 and side["params"]["octave_n"] == 2
        assert side["input"]["path"].endswith(row["input"].split("/")[-1])
        assert side["environment"]["blas_threads"] == 1  # --threads-per-worker 1
        assert image_size(out / row["image"]) == ((128, 72) if "sky" in name else (16, 16))
    csv_lines = (out / "manifest.csv").read_text().splitlines()
    assert len(csv_lines) == 13 and csv_lines[0].startswith("name,status,reason,input,end")
    # names are readable and stable: made of the parameters
    assert "sky__inception_4c-output__seed2__iter2_oct2_scale1.4_step1.5_jit32" in rows
    assert "dashboard" not in p.stderr or sweep_has_bokeh()


def sweep_has_bokeh():
    try:
        import bokeh  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.slow  # runs a Dask cluster
def test_a_failing_task_is_recorded_and_the_sweep_goes_on(local):
    out, p = local
    failed = [r for r in manifest(out).values() if r["status"] == "failed"]
    assert len(failed) == 3
    for row in failed:
        assert row["input"].endswith("tiny.png") and row["end"] == "inception_4c/output"
        assert "too small" in row["reason"] and "\n" not in row["reason"]
        assert not (out / row["image"]).exists() and not (out / row["sidecar"]).exists()
    assert p.returncode == 1
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("deepdream-caffe: error: 3 of 12 tasks failed") and "manifest" in last
    assert "Traceback" not in p.stderr


@pytest.mark.slow  # runs a Dask cluster
def test_each_result_is_bit_identical_to_dream(local, files, tmp_path):
    out, _ = local
    sky = [r for r in manifest(out).values() if r["input"].endswith("sky.png")]
    # the first and the last task a worker ran: each dream's net is its own
    picked = [sky[0], sky[-1]]
    for end, seed in [(r["end"], r["seed"]) for r in picked]:
        single = tmp_path / f"{seed}.png"
        run_cli(
            "dream",
            files["sky"],
            "-o",
            single,
            *files["model"],
            "--end",
            end,
            "--seed",
            seed,
            "--threads",
            1,
            *FAST,
            check=True,
        )
        name = f"sky__{end.replace('/', '-')}__seed{seed}__iter2_oct2_scale1.4_step1.5_jit32"
        swept = out / "images" / f"{name}.png"
        assert swept.read_bytes() == single.read_bytes()
        sidecar = json.loads(swept.with_name(swept.name + ".json").read_text())
        expected = json.loads(single.with_name(single.name + ".json").read_text())
        for key in ("params", "seed", "model", "mean_bgr", "channel_swap", "weights"):
            assert sidecar[key] == expected[key]


@pytest.mark.slow  # runs a Dask cluster
def test_a_rerun_keeps_matching_results_and_redoes_the_rest(local, files, tmp_path):
    out = tmp_path / "sweep"
    shutil.copytree(local[0], out)
    before = results(out)
    names = sorted(n for n, r in manifest(out).items() if r["status"] == "done")
    stale_sidecar, missing, truncated = (out / "images" / f"{n}.png" for n in names[:3])
    side = stale_sidecar.with_name(stale_sidecar.name + ".json")
    record = json.loads(side.read_text())
    record["seed"] += 100  # a sidecar of another dream
    side.write_text(json.dumps(record))
    missing.unlink()
    truncated.write_bytes(truncated.read_bytes()[:100])
    untouched = out / "images" / f"{names[3]}.png"
    mtime = untouched.stat().st_mtime_ns

    p = deepdream_caffe(*sweep_args(files, out), "--workers", "1")
    assert p.returncode == 1  # tiny.png still fails for inception_4c
    rows = manifest(out)
    assert {n for n, r in rows.items() if r["status"] == "done"} == set(names[:3])
    assert sum(r["status"] == "kept" for r in rows.values()) == 6
    assert sum(r["status"] == "failed" for r in rows.values()) == 3
    assert untouched.stat().st_mtime_ns == mtime
    assert results(out) == before  # the redone results have the same bytes
    assert "12 tasks, 6 already done, 6 to run" in p.stderr


@pytest.mark.slow  # runs a Dask cluster
def test_a_killed_worker_loses_no_result(local, files, tmp_path):
    """Separate dask scheduler and worker processes; one worker is killed inside a task."""
    reference = results(local[0])
    out = tmp_path / "sweep"
    with separate_cluster(2, tmp_path / "cluster") as (address, workers):
        seen = {}
        killer = threading.Thread(
            target=lambda: seen.update(
                kill_when_busy(address, workers["w1"], "w1", out / "images", after=1, timeout=300)
            )
        )
        killer.start()
        p = deepdream_caffe(*sweep_args(files, out, files["sky"]), "--scheduler", address)
        killer.join()
    assert seen["running"], seen  # it was killed in the middle of a task
    assert workers["w1"].returncode == -signal.SIGKILL
    assert p.returncode == 0, p.stderr
    rows = manifest(out)
    assert len(rows) == 6 and all(r["status"] == "done" for r in rows.values())
    got = results(out)
    assert got == {n: reference[n] for n in got} and len(got) == 6  # none missing or corrupt
    assert [f for f in os.listdir(out / "images") if f.startswith(".")] == []


@pytest.mark.slow  # runs a Dask cluster
def test_ctrl_c_stops_cleanly_and_keeps_finished_results(files, tmp_path):
    out = tmp_path / "sweep"
    cmd = [
        *CLI,
        *map(str, sweep_args(files, out, files["sky"], seeds=range(8))),
        "--iter-n",
        "6",
        "--workers",
        "1",
    ]
    p = subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=BLAS1, start_new_session=True
    )  # its own group: Ctrl-C reaches every process
    deadline = time.monotonic() + 120
    # a finished result, not the hidden temporary file it is written through
    while not list((out / "images").glob("[!.]*.json")) if (out / "images").is_dir() else True:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted; finished outputs are kept" in err and "Traceback" not in err
    rows = manifest(out)
    done = [r for r in rows.values() if r["status"] == "done"]
    assert done and any(r["status"] == "interrupted" for r in rows.values())
    assert {f"{r['name']}.png" for r in done} == set(results(out))
    for row in done:
        assert image_size(out / row["image"]) == (128, 72)  # decodes whole
    assert [f for f in os.listdir(out / "images") if f.startswith(".")] == []
    assert (out / "index.html").is_file()


def start_sweep(files, out):
    """A sweep of slow-ish tasks (8 seeds) on one worker, in its own process group."""
    cmd = [
        sys.executable,
        "-m",
        "deepdream_caffe.cli",
        *map(str, sweep_args(files, out, files["sky"], seeds=range(8))),
        "--iter-n",
        "6",
        "--workers",
        "1",
    ]
    return subprocess.Popen(
        cmd, stderr=subprocess.PIPE, text=True, env=BLAS1, start_new_session=True
    )


def test_a_ctrl_c_while_the_workers_start_is_not_lost():
    """SIGINT is ignored while the local cluster starts its workers (so that they ignore it);
    a Ctrl-C meanwhile must arrive once they are started, not be dropped."""
    started = []
    with pytest.raises(KeyboardInterrupt):
        with sweep.sigint_ignored():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            started.append(True)  # the start itself is not interrupted
    assert started


@pytest.mark.slow  # runs a Dask cluster
def test_sigterm_stops_a_sweep_as_terminated_and_keeps_finished_results(files, tmp_path):
    out = tmp_path / "sweep"
    p = start_sweep(files, out)
    deadline = time.monotonic() + 120
    while not list((out / "images").glob("[!.]*.json")) if (out / "images").is_dir() else True:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)  # the client alone, as a service manager stops it
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + signal.SIGTERM, err
    assert "terminated; finished outputs are kept" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) <= 2  # the sweep's first line, then this one
    rows = manifest(out)
    done = [r for r in rows.values() if r["status"] == "done"]
    assert done and {f"{r['name']}.png" for r in done} == set(results(out))


CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const seen = [...document.images].map(i => [i.getAttribute('src'), i.naturalWidth]);
  document.body.setAttribute('data-images', JSON.stringify(seen));
});
</script>"""


@pytest.mark.slow  # runs a Dask cluster
def test_the_gallery_loads_every_image_in_headless_chromium(local, tmp_path):
    browser = shutil.which("chromium")
    if browser is None:
        pytest.skip("chromium is not installed (make pytest installs tests/apt-packages.txt)")
    out = tmp_path / "sweep"
    shutil.copytree(local[0], out)
    page = (out / "index.html").read_text()
    (out / "check.html").write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    flags = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
    ]
    shot = tmp_path / "gallery.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1200,1400", (out / "index.html").as_uri()],
        capture_output=True,
        timeout=120,
    )
    assert image_size(shot) == (1200, 1400)
    dom = subprocess.run(
        [*flags, "--dump-dom", (out / "check.html").as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    seen = json.loads(re.search(r"data-images=\"([^\"]*)\"", dom).group(1).replace("&quot;", '"'))
    done = [r for r in manifest(out).values() if r["status"] == "done"]
    assert sorted(src for src, _ in seen) == sorted(f"thumbs/{r['name']}.jpg" for r in done)
    assert all(width > 0 for _, width in seen), seen
    for href in re.findall(r'href="([^"]+)"', page):  # every link points at a file
        assert (out / href).is_file(), href
    assert page.count("too small") == 3  # the failed tasks show their reason


# --- flags and names, without a cluster ---------------------------------------------------
def test_usage_errors_write_nothing(tmp_path, files):
    out = tmp_path / "sweep"
    before = Snapshot(tmp_path, files["sky"].parent)
    p = main_in_process(*sweep_args(files, out), "--grid", "end,end")  # a repeated value
    assert_refused(p, "distinct", before=before, codes=(2,))
    cases = [
        ["--grid", "end"],
        ["--grid", "end,colour"],
        ["--grid", "end,seed,jitter"],
        ["--workers", str(sweep.available_cores() + 1)],
        ["--scheduler", "tcp://127.0.0.1:9", "--workers", "1"],
        ["--ends", "inception_3a/output,inception_4x/output"],
    ]
    for extra in cases:
        p = main_in_process(*sweep_args(files, out), *extra)
        assert_refused(p, before=before, codes=(1,))
        assert not out.exists()


def test_ends_all_is_every_dreamable_layer_up_to_the_classifier(nets):
    definition, weights = nets["bvlc_googlenet"]
    spec = sweep.Sweep(
        inputs=["a.png"],
        outdir=None,
        lists={"end": ["all"]},
        base={"model_def": definition, "weights": weights},
    )
    ends = sweep.resolve_ends(spec)
    assert ends[0] == "conv1/7x7_s2" and ends[-1] == "pool5/7x7_s1"
    assert "inception_4c/output" in ends and "conv2/3x3" in ends and len(ends) == len(set(ends))
    assert not {"loss3/classifier", "prob", "data"} & set(ends)


@pytest.mark.slow  # waits 10 s for the scheduler
def test_an_unreachable_scheduler_is_one_line(tmp_path, files, capsys):
    out = tmp_path / "sweep"
    assert cli.main([*map(str, sweep_args(files, out)), "--scheduler", "tcp://127.0.0.1:9"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("deepdream-caffe: error: cannot reach the Dask scheduler")
    assert not out.exists()


PARSER = cli.build_parser()


@settings(max_examples=150, deadline=None)
@given(st.text(alphabet="0123456789,.-+ eEn", max_size=12))
def test_list_flags_take_distinct_valid_values_or_exit_2(text):
    for flag, valid in [
        ("--seeds", lambda v: isinstance(v, int) and v >= 0),
        ("--octave-scale", lambda v: np.isfinite(v) and v > 1),
    ]:
        try:
            args = PARSER.parse_args(["sweep", "in.png", "-o", "o", flag, text])
        except SystemExit as e:
            assert e.code == 2
            continue
        values = args.seeds if flag == "--seeds" else args.octave_scale
        assert values and len(set(values)) == len(values) and all(map(valid, values))


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(1.0001, 4, allow_nan=False), min_size=1, max_size=4, unique=True),
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=3, unique=True),
)
def test_names_are_stable_unique_and_safe(scales, ends):
    lists = {
        "end": ends,
        "seed": [0, 1],
        "iter_n": [10],
        "octave_n": [4],
        "octave_scale": scales,
        "step_size": [1.5],
        "jitter": [32],
    }
    names = [t.name for t in sweep.grid_tasks(["a/x.png", "b/x.png"], lists, {})]
    assert names == [t.name for t in sweep.grid_tasks(["a/x.png", "b/x.png"], lists, {})]
    assert len(set(names)) == len(names) == 2 * 2 * len(scales) * len(ends)
    assert all(re.fullmatch(r"[A-Za-z0-9_.+-]+", n) and not n.startswith(".") for n in names)


# --- a draw sweep: --classes ----------------------------------------------------------------
CLASSES, DRAW_SEEDS = [954, 13], [0, 1]


@pytest.fixture(scope="module")
def one_step(tmp_path_factory):
    """A schedule of one octave of one step (deepdraw's first, on loss3): a draw takes seconds."""
    from deepdream_caffe import draw

    path = tmp_path_factory.mktemp("schedule") / "one.json"
    path.write_text(json.dumps([dict(draw.BLOG[0], iter_n=1)]))
    return path


def class_sweep_args(draw_net, one_step, out, classes=CLASSES, seeds=DRAW_SEEDS):
    return [
        "sweep",
        "--classes",
        ",".join(map(str, classes)),
        "--seeds",
        ",".join(map(str, seeds)),
        "-o",
        out,
        "--model-def",
        draw_net[0],
        "--weights",
        draw_net[1],
        "--schedule",
        one_step,
    ]


@pytest.mark.slow  # runs a Dask cluster
def test_a_class_sweep_equals_single_draws_and_a_rerun_keeps_them(draw_net, one_step, tmp_path):
    out = tmp_path / "sweep"
    p = deepdream_caffe(*class_sweep_args(draw_net, one_step, out), "--workers", "1")
    assert p.returncode == 0, p.stderr
    rows = manifest(out)
    assert list(rows) == [f"class{c}__seed{s}__one" for c in CLASSES for s in DRAW_SEEDS]
    assert all(r["status"] == "done" for r in rows.values())
    for c in CLASSES:
        for s in DRAW_SEEDS:
            single = tmp_path / f"{c}-{s}.png"
            run_cli(
                "draw", c, "-o", single, "--seed", s, "--schedule", one_step,
                "--model-def", draw_net[0], "--weights", draw_net[1], "--threads", 1,
                check=True,
            )  # fmt: skip
            swept = out / "images" / f"class{c}__seed{s}__one.png"
            assert swept.read_bytes() == single.read_bytes()
            side = json.loads(swept.with_name(swept.name + ".json").read_text())
            assert side["class"]["index"] == c and side["seed"] == s
            assert side["environment"]["blas_threads"] == 1
    page = (out / "index.html").read_text()
    assert page.count("<tr><th>954</th>") == 1 and page.count("<tr><th>13</th>") == 1
    assert all((out / "thumbs" / f"{n}.jpg").is_file() for n in rows)

    before = results(out)
    mtimes = {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}
    p = deepdream_caffe(*class_sweep_args(draw_net, one_step, out), "--workers", "1")
    assert p.returncode == 0, p.stderr
    assert "4 tasks, 4 already done, 0 to run" in p.stderr
    assert all(r["status"] == "kept" for r in manifest(out).values())
    assert results(out) == before
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in (out / "images").glob("*.png")}


@pytest.mark.slow  # runs a Dask cluster
def test_ctrl_c_keeps_a_class_sweeps_finished_draws(draw_net, one_step, tmp_path):
    out = tmp_path / "sweep"
    args = class_sweep_args(draw_net, one_step, out, seeds=range(8))
    cmd = [*CLI, *map(str, args), "--workers", "1"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=BLAS1, start_new_session=True)
    deadline = time.monotonic() + 120
    while not list((out / "images").glob("[!.]*.json")) if (out / "images").is_dir() else True:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err
    rows = manifest(out)
    done = {n for n, r in rows.items() if r["status"] == "done"}
    assert done and any(r["status"] == "interrupted" for r in rows.values())
    assert {f"{n}.png" for n in done} == set(results(out))
    assert [f for f in os.listdir(out / "images") if f.startswith(".")] == []
    # what finished is kept by the next run (stopped again as soon as it has started)
    spec = sweep.from_args(cli.build_parser().parse_args([*map(str, args)]))
    tasks, expected = sweep.plan_tasks(spec)
    kept = {
        t.name for t in tasks if sweep.is_kept(out / "images" / f"{t.name}.png", expected[t.name])
    }
    assert kept == done


def test_a_bad_class_is_one_line_and_writes_nothing(draw_net, one_step, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(tmp_path / "mirror"))  # no class list
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "sweep"
    before = Snapshot(tmp_path, one_step.parent)
    for classes, words in [
        ([954, 1000], ["class 1000 is out of range"]),
        ([954, "banana"], ["class name needs", "synset_words.txt"]),
        ([954, "0954"], ["954 and 0954 are both class 954"]),
    ]:
        p = main_in_process(*class_sweep_args(draw_net, one_step, out, classes))
        assert_refused(p, *words, before=before, codes=(1,))
        assert not out.exists()


def test_a_class_sweep_refuses_a_dream_sweeps_flags(draw_net, one_step, tmp_path, files):
    out = tmp_path / "sweep"
    before = Snapshot(tmp_path, one_step.parent)
    for extra, word in [
        (["--iter-n", "2"], "--iter-n is for a dream sweep"),
        (["--ends", "inception_3a/output"], "--ends is for a dream sweep"),
        (["--no-clip"], "--no-clip is for a dream sweep"),
        (["--model", "places205_googlenet"], "--model places205_googlenet is for"),
        ([files["sky"]], "is for a dream sweep"),
    ]:
        p = main_in_process(*class_sweep_args(draw_net, one_step, out), *extra)
        assert_refused(p, word, before=before, codes=(2,))
    p = main_in_process(*class_sweep_args(draw_net, one_step, out), "--grid", "end,seed")
    assert_refused(p, "class, seed", before=before, codes=(1,))
    p = main_in_process("sweep", "-o", out, "--seeds", "0")
    assert_refused(p, "--classes", before=before, codes=(2,))
    p = main_in_process(*sweep_args(files, out), "--schedule", "blog")
    assert_refused(p, "--schedule is for a draw sweep", before=before, codes=(2,))
    assert not out.exists()
