"""The default build's patches (caffe/patches-openmp/: the OpenMP layers, max pooling, LRN's
scratch, powers and running sums, im2col and col2im, max pooling and ReLU with AVX2) change no
bit: the default build against the pristine one, every blob of bvlc_googlenet's whole net
forward and backward, a net of the patched layers' edge cases, and a dream, at 1 and 2 threads
(deepdream_caffe/lab/variants.py). Caffe's own gtests run on the default build (`make
caffe-test`)."""

import os

import pytest

from deepdream_caffe.lab import variants


@pytest.fixture(scope="module")
def both_builds():
    missing = [
        v for v in variants.VARIANTS if not (variants.build_dir(v) / "build-info.json").is_file()
    ]
    if missing:
        why = f"the {' and '.join(missing)} Caffe build is missing: `make caffe-pristine`"
        if os.environ.get("DEEPDREAM_CAFFE_VARIANTS") == "required":  # make test
            pytest.fail(why)
        pytest.skip(why)


@pytest.mark.parametrize("pass_size", [(224, 224), (229, 227)])  # pool5 7x7 -> 1x1
def test_openmp_layers_give_the_pristine_bits(both_builds, pass_size):
    rows = variants.compare(pass_size, (200, 113), 2, [1, 2])
    for row in rows:
        assert row["compared"] > 200  # every blob's data and diff, and the dream
        assert row["differ"] == [], f"{row['threads']} threads"
    for variant in variants.VARIANTS:  # each ran with the thread count asked for
        assert [r["runs"][variant]["blas"]["blas_threads"] for r in rows] == [1, 2]


def test_the_same_bits_with_fused_and_unfused_kernels_and_uneven_splits(both_builds):
    """OpenBLAS's Haswell kernels compute an axpy's body with fused multiply-adds and its tail
    without, so a BLAS call split at another place would change bits; at 240x240 both LRN
    layers have planes of 60x60 = 3600 elements, which 2 and 4 threads would split off the
    kernels' 32-element blocks.
    SkylakeX, the default here, fuses both; Prescott neither."""
    for kernel in ("Haswell", "Prescott"):
        for row in variants.compare((240, 240), (200, 113), 2, [2, 4], kernel):
            assert row["kernel"] == kernel
            assert row["differ"] == [], f"{kernel}, {row['threads']} threads"


def test_lrn_sums_split_where_openblas_splits_each_call(both_builds):
    """Patch 0010 runs LRN's running sums over channels on each thread's part of the plane,
    the parts OpenBLAS gives each axpy call of more than 10000 elements. In the dream's last
    octave at 449x451 both LRN planes are 113x113 = 12769 positions, split unevenly at 2 and 3
    threads; a part that began 5 positions earlier changed the Haswell dream's bits."""
    for row in variants.compare((224, 224), (449, 451), 1, [2, 3], "Haswell"):
        assert row["kernel"] == "Haswell"
        assert row["differ"] == [], f"{row['threads']} threads"


def test_more_threads_than_a_small_layer_has_parts_for(both_builds):
    """Each thread's part of an element-wise step is rounded up to 64 elements, so at 30
    threads the edge-case net's LRN (9x61x67 per image) leaves the last threads nothing; the
    patched LRN once passed such an empty part to Caffe's vSqr, which aborts on it (patch
    0011). Every blob, and the dream, as in the pristine build."""
    for row in variants.compare((224, 224), (200, 113), 1, [30]):
        assert row["differ"] == [], f"{row['threads']} threads"


def test_the_variants_are_builds_of_their_own():
    dirs = [variants.build_dir(v) for v in variants.VARIANTS]
    assert dirs[0] != dirs[1]
    assert dirs[1].name.startswith(("caffe-cpu-pristine-", "caffe-cuda-pristine-"))
