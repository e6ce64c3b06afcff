"""The Caffe build: verified source, refusal of tampered source, the build record."""

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from deepdream_caffe.build import build_record, caffe_build_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "build-caffe.sh"
SHA256 = "e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c"


def build_caffe(*args, **env):
    env = {**os.environ, "PYTHON": sys.executable, **{k: str(v) for k, v in env.items()}}
    return subprocess.run(
        ["bash", str(SCRIPT), *map(str, args)], env=env, capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def tarball():
    """The verified Debian tarball, from the build cache (make setup fetched it)."""
    path = Path(os.path.expanduser("~/.cache/deepdream-caffe/src"))
    path = path / "caffe_1.0.0+git20180821.99bd997.orig.tar.gz"
    if not path.is_file():
        path = caffe_build_dir().parent / "src" / path.name
    if not path.is_file():
        pytest.skip("the Debian tarball is not in the build cache")
    return path


def test_build_record_names_the_verified_source():
    record = build_record()
    assert record["source_sha256"] == SHA256
    assert record["bvlc_commit"].startswith("99bd997")
    assert any(p.startswith("0001-protobuf") for p in record["patches"])
    assert "-DCPU_ONLY=ON" in record["cmake_flags"] or record["variant"] == "cuda"


def test_tampered_tarball_is_refused_and_nothing_built(tmp_path, tarball):
    bad = tmp_path / tarball.name
    data = bytearray(tarball.read_bytes())
    data[-1] ^= 0xFF  # flip one byte (the last is gzip's size field: a 0 there already)
    bad.write_bytes(bytes(data))
    p = build_caffe(CAFFE_SRC_TARBALL=bad, DEEPDREAM_CAFFE_CACHE=tmp_path / "cache")
    assert p.returncode != 0
    assert "sha256" in p.stderr and "Nothing was built" in p.stderr
    assert not list((tmp_path / "cache").glob("caffe-*"))


def test_local_tarball_is_accepted(tmp_path, tarball):
    p = build_caffe("--source-only", tmp_path / "tree", CAFFE_SRC_TARBALL=tarball)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "tree" / "src" / "caffe" / "net.cpp").is_file()


def github_style(tree_tar, out, edit=None):
    """Repack the tree under a top folder, as GitHub's archive has it (other gzip bytes)."""
    with tarfile.open(tree_tar) as src, tarfile.open(out, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if edit and member.name.endswith(edit):
                data = data + b"\n// changed\n"
                member.size = len(data)
            member.name = "caffe-99bd997/" + member.name.removeprefix("./")
            dst.addfile(member, None if data is None else __import__("io").BytesIO(data))
    return out


@pytest.mark.parametrize("edit,ok", [(None, True), ("src/caffe/net.cpp", False)])
def test_github_fallback_is_verified_by_manifest(tmp_path, tarball, edit, ok):
    archive = github_style(tarball, tmp_path / "gh.tar.gz", edit)
    p = build_caffe(
        "--source-only",
        tmp_path / "tree",
        DEBIAN_MIRROR="http://127.0.0.1:9/debian",  # Debian unreachable
        CAFFE_GITHUB_URL=f"file://{archive}",
        DEEPDREAM_CAFFE_CACHE=tmp_path / "c",
    )
    assert (p.returncode == 0) == ok, p.stderr
    if ok:
        assert "github:BVLC/caffe@99bd997" in p.stderr
    else:
        assert "does not match caffe/source-manifest.sha256" in p.stderr


def test_manifest_covers_the_tree():
    lines = (ROOT / "caffe" / "source-manifest.sha256").read_text().splitlines()
    assert len(lines) == 701
    assert any(line.endswith("  src/caffe/util/io.cpp") for line in lines)


def test_patches_say_why_and_touch_no_numerics():
    for patch in sorted((ROOT / "caffe").glob("patches*/*.patch")):
        text = patch.read_text()
        assert text.startswith("Why:"), patch
        assert "Numerics:" in text, patch
        header = json.dumps(text.split("---", 1)[0])
        assert len(header) > 80, patch


LAZY_SKIMAGE = """
import sys
import numpy as np
import caffe
assert "skimage" not in sys.modules, "import caffe imported scikit-image"
im = np.random.RandomState(0).rand(6, 5, 3).astype(np.float32)
got = caffe.io.resize_image(im, (9, 7))  # imports skimage.transform now
from skimage.transform import resize
lo, hi = im.min(), im.max()
want = (resize((im - lo) / (hi - lo), (9, 7), order=1, mode="constant") * (hi - lo) + lo)
assert got.tobytes() == want.astype(np.float32).tobytes(), "resize_image changed"
print("ok")
"""


def test_import_caffe_leaves_scikit_image_to_the_functions_that_use_it():
    """Patch 0012: `import caffe` no longer imports scikit-image (0.12 to 0.15 s); caffe.io's
    resize_image imports it when called and gives what it gave."""
    if build_record().get("caffe_patches") != "openmp":
        pytest.skip("patch 0012 is in the default build's patches only")
    p = subprocess.run([sys.executable, "-c", LAZY_SKIMAGE], capture_output=True, text=True)
    assert (p.returncode, p.stdout.strip()) == (0, "ok"), p.stderr[-2000:]


def test_build_record_names_no_clone():
    """The build is cached outside the clone and shared by every clone: its record (copied
    into sidecars and bundles) holds no path of this clone or its venv."""
    text = json.dumps(build_record())
    # every absolute path in it, whole: a clone at /p is not found in /proc or /usr/include/python3
    paths = re.findall(r"(?<![\w.-])/[^\s\"',;:=]*", text)
    mine = [p for p in paths for at in (str(ROOT), sys.prefix) if p == at or p.startswith(at + "/")]
    assert not mine and ".venv" not in text
    assert "-DPYTHON_EXECUTABLE=<venv python>" in build_record()["cmake_flags"]
    script = SCRIPT.read_text()  # what a new build records: the flag by role, not by path
    assert '"cmake_flags": """$(printf \'%s\\n\' "$recorded_python_flag"' in script
