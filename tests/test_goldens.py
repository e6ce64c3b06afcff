"""The golden regression suite: recompute every case of reference_images/ and compare.

Tolerance: 0, every float32 of the result before the 8-bit cast. The goldens are made and
checked under the same pinned BLAS (one thread, Haswell kernels) and the same packages, so
the arithmetic and its order are the same, and any difference means something changed. No
small tolerance could tell a harmless change from a real one: one OpenBLAS thread instead of
two already moves a 4-octave dream by up to 60 of 255 (docs/determinism.md), because a tiny
difference flips a max-pool choice and the dream follows it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import run_cli

from deepdream_caffe.lab import goldens

pytestmark = [pytest.mark.caffe, pytest.mark.slow]
REFERENCE = Path(__file__).resolve().parents[1] / "reference_images"
TOLERANCE = 0.0  # see the module docstring


@pytest.fixture(scope="module")
def fresh(tmp_path_factory, notebook_images):
    if not goldens.avx2():
        pytest.skip("no AVX2: the goldens' pinned OpenBLAS kernels cannot run on this CPU")
    out = tmp_path_factory.mktemp("goldens")
    p = subprocess.run(
        [sys.executable, "-m", "deepdream_caffe.lab.goldens", "compute", str(out)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert p.returncode == 0, p.stderr
    return out


def test_every_case_has_a_golden():
    names = {case.name for case in goldens.CASES}
    assert {p.stem for p in REFERENCE.glob("*.npy")} == names
    for name in names:
        assert (REFERENCE / f"{name}.png").is_file() and (REFERENCE / f"{name}.json").is_file()


@pytest.mark.parametrize("case", goldens.CASES, ids=lambda c: c.name)
def test_golden(fresh, case):
    expected = np.load(REFERENCE / f"{case.name}.npy")
    got = np.load(fresh / f"{case.name}.npy")
    recorded = json.loads((REFERENCE / f"{case.name}.json").read_text())
    now = json.loads((fresh / f"{case.name}.json").read_text())
    assert now["weights"] == recorded["weights"], "the synthetic weights are not the same"
    stats = goldens.differences(expected, got, TOLERANCE)
    if not goldens.within(stats, TOLERANCE):
        diff = fresh / f"{case.name}.diff.png"
        if expected.shape == got.shape:
            d = np.abs(expected - got)
            d = np.concatenate(list(d), axis=1) if case.zoom_frames else d
            PIL.Image.fromarray(np.uint8(np.clip(d * 10, 0, 255))).save(diff)  # 10x brighter
        changed = {
            k: (recorded["versions"].get(k), v)
            for k, v in now["versions"].items()
            if recorded["versions"].get(k) != v
        }
        pytest.fail(
            f"{case.name} differs from its golden: {stats}; diff image {diff}; "
            f"versions changed since the golden: {changed or 'none'}; BLAS now "
            f"{now['blas_kernel']} x{now['blas_threads']}, golden "
            f"{recorded['blas_kernel']} x{recorded['blas_threads']}"
        )
    assert got.dtype == np.float32


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_result_fails_every_comparison(bad):
    """NaN > 0 is False: a max() of differences alone would pass a NaN result."""
    expected = np.zeros((4, 4, 3), np.float32)
    got = expected.copy()
    got[1, 2, 0] = bad
    for a, b in ((expected, got), (got, expected), (got, got)):
        stats = goldens.differences(a, b, TOLERANCE)
        assert stats["non_finite"] == 1 and not goldens.within(stats, TOLERANCE)
        assert not goldens.within(stats, 1e30)
    assert goldens.within(goldens.differences(expected, expected.copy()), TOLERANCE)
    assert not goldens.within(goldens.differences(expected, expected[:2]), 255)


def test_separate_processes_give_the_same_bits(fresh, tmp_path):
    """A second process, same seed, same configuration: bit-identical (the CLI, unpinned)."""
    definition, weights = goldens.net_files("bvlc_googlenet", tmp_path / "nets")
    img = tmp_path / "sky.png"
    PIL.Image.fromarray(np.uint8(goldens.inputs()["sky1024px.jpg"])).save(img)
    raws = []
    for i in range(2):
        raw = tmp_path / f"raw{i}.npy"
        run_cli(
            "dream",
            img,
            "-o",
            tmp_path / f"o{i}.png",
            "--raw",
            raw,
            "--seed",
            9,
            "--model-def",
            definition,
            "--weights",
            weights,
            check=True,
        )
        raws.append(np.load(raw))
    np.testing.assert_array_equal(*raws)
