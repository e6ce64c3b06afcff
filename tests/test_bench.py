"""The benchmark's quick mode runs every path; its PyTorch baseline computes the same thing.

No timing is asserted: the benchmark reports numbers, it does not judge them.
"""

import hashlib
import json

import numpy as np
import pytest

from deepdream_caffe.lab import bench

pytestmark = [pytest.mark.caffe, pytest.mark.slow]


def test_quick_bench_writes_its_report_and_ours_equals_the_notebook(tmp_path, notebook_images):
    variants = ["ours", "notebook"] + (["pytorch"] if bench.torch_available() else [])
    record = bench.bench(tmp_path, quick=True, variants=variants, say=lambda *a: None)
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
    # (pooling rounding, LRN scaling) gives 1e-2 or more
    assert rel_l2(a_caffe, a_torch) < 1e-4
    assert rel_l2(g_caffe, g_torch) < 1e-3


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
    md = (tmp_path / "blas.md").read_text()
    assert md.count("\n| ") == 1 + len(record["results"])  # the header and a row each
    assert all(f"Skipped: {m}" in md for m in record["missing"])
