"""The benchmark's quick mode runs every path; its PyTorch baseline computes the same thing.

No timing is asserted: the benchmark reports numbers, it does not judge them.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from deepdream_caffe.lab import bench

pytestmark = [pytest.mark.caffe, pytest.mark.slow]


def test_quick_bench_writes_its_report_and_ours_equals_the_notebook(tmp_path, notebook_images):
    variants = ["ours", "notebook"] + (["pytorch"] if bench.torch_available() else [])
    record = bench.bench(tmp_path, quick=True, variants=variants, threads=2, say=lambda *a: None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["comparison"] == record["comparison"]
    assert [r["variant"] for r in saved["results"]] == variants
    for r in saved["results"]:
        assert len(r["octaves"]) == bench.QUICK["octave_n"]
        assert r["dream_s"] > 0 and r["gflop_per_s"] > 0 and r["peak_rss_mib"] > 0
        o = r["octaves"][-1]
        assert o["size"] == list(bench.QUICK["size"])
        assert abs(o["forward_s"] + o["backward_s"] + o["numpy_s"] - o["total_s"]) < 1e-6
    assert saved["comparison"]["bit_identical_to_notebook"] is True
    assert "| ours |" in (tmp_path / "bench.md").read_text()


def test_quick_bench_reports_the_sgemm_peaks_the_fraction_of_them_and_the_scaling(
    tmp_path, notebook_images
):
    record = bench.bench(tmp_path, quick=True, variants=["ours"], threads=2, say=lambda *a: None)
    saved = json.loads((tmp_path / "bench.json").read_text())
    for key in ("sgemm_peaks", "scaling", "results", "caffe_blas_path", "threads"):
        assert saved[key] == record[key]
    peaks = {p["threads"]: p for p in record["sgemm_peaks"]}
    assert list(peaks) == [1, 2]
    for n, p in peaks.items():
        assert p["n"] == bench.QUICK_SGEMM_N
        assert p["caffe_blas_gflop_per_s"] > 0 and p["numpy_gflop_per_s"] > 0
        # OpenBLAS runs at most one thread per core: at most what was asked, never fewer than 1
        assert 1 <= p["caffe_blas_threads"] <= n and 1 <= p["numpy_blas_threads"] <= n
        assert p["caffe_blas_path"] == record["caffe_blas_path"]
    assert Path(record["caffe_blas_path"]).is_file()
    (ours,) = record["results"]
    assert ours["threads"] == 2 and 1 <= ours["blas_threads"] <= 2
    assert ours["fraction_of_sgemm_peak"] == {
        "caffe_blas": pytest.approx(ours["gflop_per_s"] / peaks[2]["caffe_blas_gflop_per_s"]),
        "numpy": pytest.approx(ours["gflop_per_s"] / peaks[2]["numpy_gflop_per_s"]),
    }
    scaling = record["scaling"]
    t1, t2 = scaling["ours_dream_s"]
    assert scaling["threads"] == [1, 2] and t1 > 0
    assert t2 == ours["dream_s"]  # the 2-thread variant is the scaling's 2-thread run
    assert scaling["ours_speedup"] == pytest.approx(t1 / t2)
    assert scaling["caffe_blas_sgemm_speedup"] == pytest.approx(
        peaks[2]["caffe_blas_gflop_per_s"] / peaks[1]["caffe_blas_gflop_per_s"]
    )
    assert (tmp_path / "ours-1t.npy").is_file()
    md = (tmp_path / "bench.md").read_text()
    assert record["caffe_blas_path"] in md and "| 1 |" in md and "| 2 |" in md
    assert "fraction of sgemm peak" in md and "Scaling, 1 to 2 threads" in md


def test_repeated_bench_reports_each_variants_median_run(tmp_path, notebook_images):
    record = bench.bench(
        tmp_path, quick=True, variants=["ours"], threads=2, repeats=3, say=lambda *a: None
    )
    assert record["repeats"] == 3
    runs = {(r["variant"], r["threads"]): r for r in record["runs"]}
    assert list(runs) == [("ours", 2), ("ours", 1)]
    for run in runs.values():
        assert len(run["runs_dream_s"]) == 3 and run["runs_same_bits"] is True
    (ours,) = record["results"]
    assert ours["dream_s"] == sorted(runs["ours", 2]["runs_dream_s"])[1]
    assert record["scaling"]["ours_dream_s"] == [
        sorted(runs["ours", n]["runs_dream_s"])[1] for n in (1, 2)
    ]
    assert "the median of 3 runs" in (tmp_path / "bench.md").read_text()


def test_caffe_sgemm_is_the_loaded_blas_and_multiplies_like_numpy():
    from deepdream_caffe import environment
    from deepdream_caffe.lab import sgemm

    function, path = sgemm.caffe_sgemm()
    assert path in {os.path.realpath(p) for p in environment.loaded_libraries()}
    rng = np.random.RandomState(0)
    a, b = (rng.standard_normal((64, 64)).astype(np.float32) for _ in range(2))
    c = np.full_like(a, np.nan)
    sgemm.caffe_product(function, a, b, c)
    # float32 sums of 64 products of unit normals: two BLAS may add in other orders
    np.testing.assert_allclose(c, a @ b, rtol=0, atol=1e-4)


def test_conv_macs_match_the_published_count(nets, load):
    """13.77 GMAC for the forward pass to inception_4c/output at 576x1024 (issue figure)."""
    net = load()
    net.blobs["data"].reshape(1, 3, 576, 1024)
    net.reshape()
    assert bench.conv_macs(net, "inception_4c/output") == pytest.approx(13.77e9, rel=1e-3)


def test_torch_twin_agrees_with_caffe_for_one_step(nets, load):
    """Same weights, same input: activations and the data gradient agree to float32 rounding."""
    pytest.importorskip("torch")
    from deepdream_caffe.definition import prune, read_definition
    from deepdream_caffe.lab.torchnet import TorchNet

    end = "inception_4c/output"
    net = load(end=end)
    twin = TorchNet(
        prune(read_definition(nets["bvlc_googlenet"][0]), end), net, (104.0, 116.0, 122.0)
    )
    x = np.random.RandomState(0).uniform(-100, 100, (1, 3, 96, 160)).astype(np.float32)
    grads = []
    for n in (net, twin):
        n.blobs["data"].reshape(*x.shape)
        n.blobs["data"].data[...] = x
        n.forward(end=end)
        n.blobs[end].diff[...] = n.blobs[end].data
        n.backward(start=end)
        grads.append((n.blobs[end].data.copy(), n.blobs["data"].diff.copy()))
    (a_caffe, g_caffe), (a_torch, g_torch) = grads

    def rel_l2(a, b):
        return np.linalg.norm(a - b) / np.linalg.norm(a)

    # float32, ~30 layers deep: relative errors of 1e-6..1e-5 are rounding; a wrong layer
    # (pooling rounding, LRN scaling) gives 1e-2 or more. The gradient also goes through
    # max pooling's argmax and ReLU's step at 0, where a 1-ulp difference in an activation can
    # send a gradient down another path: measured 6e-7 with OpenBLAS's Haswell and Prescott
    # kernels, 1.1e-3 with its SkylakeX kernels (OpenBLAS 0.3.21 and 0.3.29 alike).
    assert rel_l2(a_caffe, a_torch) < 1e-4
    assert rel_l2(g_caffe, g_torch) < 5e-3


def test_kernel_bench_runs_each_kernel_it_names_and_groups_by_bits(tmp_path, notebook_images):
    from deepdream_caffe.lab import kernelbench

    record = kernelbench.kernelbench(
        tmp_path, quick=True, kernels=["Haswell", "Prescott"], threads=[1], say=lambda *a: None
    )
    results = record["results"]
    # the kernel OpenBLAS reports running, not merely the one asked for
    assert [r["blas_kernel"] for r in results] == ["Haswell", "Prescott"]
    assert [r["blas_threads"] for r in results] == [1, 1]
    for r in results:
        again = np.load(tmp_path / f"{r['name']}.npy")
        assert np.isfinite(again).all() and again.shape == (144, 256, 3)
        assert r["sha256"] == hashlib.sha256(again.tobytes()).hexdigest()
    saved = json.loads((tmp_path / "kernels.json").read_text())
    assert saved["results"] == results
    assert (tmp_path / "kernels.md").read_text().count("| Haswell | 1 | Haswell |") == 1


def test_kernel_bench_skips_what_the_cpu_cannot_run_and_goes_on_after_a_failure(
    tmp_path, monkeypatch, notebook_images
):
    from deepdream_caffe.lab import kernelbench

    monkeypatch.setattr(kernelbench.environment, "cpu_flags", lambda: {"avx2", "fma"})
    monkeypatch.setattr(kernelbench, "MODULE", "deepdream_caffe.lab.no_such_module")
    lines = []
    record = kernelbench.kernelbench(
        tmp_path, quick=True, kernels=["SkylakeX", "Haswell"], threads=[1], say=lines.append
    )
    assert record["skipped"] == ["SkylakeX"] and record["results"] == []
    (failed,) = record["failed"]
    assert failed["name"] == "Haswell-1t" and "No module named" in failed["failed"]
    md = (tmp_path / "kernels.md").read_text()
    assert "Skipped (the CPU cannot run it): SkylakeX" in md and "Failed: Haswell-1t" in md
    assert any("SkylakeX skipped" in line for line in lines)


def test_blas_bench_runs_each_library_it_finds_and_records_bits(tmp_path, monkeypatch):
    """At 64x48 and one thread: every BLAS found runs the net, reports its kernel, and gives
    the same bits twice; the ones not installed or built are named as skipped."""
    from deepdream_caffe.lab import blasbench

    monkeypatch.setattr(blasbench, "SIZE", (64, 48))
    record = blasbench.blasbench(tmp_path, iterations=1, threads=[1], say=lambda *a: None)
    assert record["results"], record["missing"]  # Debian's OpenBLAS at least
    for r in record["results"]:
        assert r["kernel"] and r["forward_ms"] > 0 and r["sgemm_gflops"] > 0
        assert r["bit_groups"][0] == r["bit_groups"][1], r["blas"]
        assert len(r["runs_ms"]) == 1 and r["runs_ms"][0] == r["forward_ms"] + r["backward_ms"]
    md = (tmp_path / "blas.md").read_text()
    assert md.count("\n| ") == 1 + len(record["results"])  # the header and a row each
    assert all(f"Skipped: {m}" in md for m in record["missing"])


def test_blas_bench_rounds_become_one_row_per_configuration():
    """With --repeats, a row is the configuration's median run by forward + backward time (the
    slower middle one of an even count), naming every run's time, the best sgemm and all bits."""
    from deepdream_caffe.lab import blasbench

    def run(forward, backward, sgemm, digest, load):
        return {
            "blas": "B",
            "threads": 2,
            "kernel": "K",
            "forward_ms": forward,
            "backward_ms": backward,
            "sgemm_gflops": sgemm,
            "sha256": [digest, digest],
            "load_before": load,
            "load_after": load + 0.5,
        }

    rounds = [run(300, 200, 90, "a", 1.0), run(250, 200, 95, "a", 0.2), run(400, 300, 80, "b", 2)]
    row = blasbench.median_run(rounds)
    assert (row["forward_ms"], row["backward_ms"]) == (300, 200)
    assert row["runs_ms"] == [500, 450, 700]  # in the order they ran
    assert row["sgemm_gflops"] == 95 and row["sha256"] == ["a", "a", "a", "a", "b", "b"]
    assert (row["load_before"], row["load_after"]) == (0.2, 2.5)
    assert blasbench.median_run(rounds[:2])["forward_ms"] == 300  # even: the slower middle
    row["bit_groups"] = [1, 1, 1, 1, 2, 2]
    md = blasbench.markdown(
        {
            "size": [64, 48],
            "end": "e",
            "cpu": "c",
            "caffe_build": "b",
            "iterations": 5,
            "repeats": 3,
            "missing": [],
            "results": [row],
        }
    )
    assert "| B | 2 | K | 300 | 200 | 500, 450, 700 | 95 | 1, 2 | 0.20 / 2.50 |" in md


def test_bench_without_its_inputs_leaves_no_folder(tmp_path, monkeypatch):
    """The notebook's image cannot be had: one error, and no empty output folder behind."""
    from deepdream_caffe import assets
    from deepdream_caffe.errors import DreamError

    def unreachable(asset, **kwargs):
        raise DreamError(f"cannot download {asset.filename}", "use a mirror")

    monkeypatch.setattr(assets, "fetch", unreachable)
    with pytest.raises(DreamError, match="sky1024px.jpg"):
        bench.bench(tmp_path / "out", quick=True, variants=["ours"], say=lambda *a: None)
    assert not (tmp_path / "out").exists()
