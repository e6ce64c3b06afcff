"""Model records: the Model Zoo readmes agree with them, and archives unpack safely."""

import dataclasses
import hashlib
import io
import re
import tarfile
from pathlib import Path

import pytest

from deepdream_caffe import models
from deepdream_caffe.assets import Asset
from deepdream_caffe.errors import DreamError

ROOT = Path(__file__).resolve().parents[1]


def front_matter(name):
    text = (ROOT / "models" / name / "readme.md").read_text()
    block = re.match(r"---\n(.*?)\n---\n", text, re.S).group(1)
    return dict(line.split(": ", 1) for line in block.splitlines())


@pytest.mark.parametrize("name", sorted(models.MODELS))
def test_readme_front_matter_agrees_with_record(name):
    record, readme = models.MODELS[name], front_matter(name)
    assert readme["caffemodel_url"] == record.weights.url
    assert "sha1:" + readme["sha1"] == record.weights.hash
    assert readme["default_end"] == record.default_end
    assert tuple(float(v) for v in readme["mean_bgr"].split(",")) == record.mean
    assert tuple(int(v) for v in readme["channel_swap"].split(",")) == record.channel_swap
    assert readme["license"].split(" (")[0] == record.licence.split(" (")[0]
    if "bytes" in readme:
        assert int(readme["bytes"]) == record.weights.size


def test_the_notebook_mean_is_the_default_everywhere():
    assert all(m.mean == models.IMAGENET_MEAN_BGR for m in models.MODELS.values())
    assert models.IMAGENET_MEAN_BGR == (104.0, 116.0, 122.0)  # dream.ipynb cell 3


def tarball(members):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def places_from_mirror(tmp_path, monkeypatch):
    """A Places205-shaped record whose archive (made here) sits in a mirror folder."""

    def make(members):
        record = models.MODELS["places205_googlenet"]
        data = tarball(members)
        mirror = tmp_path / "mirror"
        mirror.mkdir(exist_ok=True)
        (mirror / record.weights.filename).write_bytes(data)
        monkeypatch.setenv("DEEPDREAM_CAFFE_MIRROR", str(mirror))
        monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(tmp_path / "cache"))
        weights = Asset(
            record.weights.filename, record.weights.url, "sha1:" + hashlib.sha1(data).hexdigest()
        )
        return dataclasses.replace(record, weights=weights)

    return make


def test_archive_members_are_extracted_into_the_cache(places_from_mirror, tmp_path):
    places = models.MODELS["places205_googlenet"]
    record = places_from_mirror(
        {
            places.archive_definition: b"name: 'x'\n",
            places.archive_weights: b"weights",
            "googlenet_places205/other.txt": b"not wanted",
        }
    )
    definition, weights = models.model_files(record, progress=False)
    assert definition.read_bytes() == b"name: 'x'\n" and weights.read_bytes() == b"weights"
    assert definition.is_relative_to(tmp_path / "cache")
    assert not (definition.parent / "other.txt").exists()
    assert not list((tmp_path / "cache" / "data").glob("*.part-*"))  # no half-extracted folder


def test_archive_without_the_weights_is_a_clear_error(places_from_mirror, tmp_path):
    record = places_from_mirror({"googlenet_places205/deploy_places205.protxt": b""})
    with pytest.raises(DreamError, match="does not contain .*googlelet_places205"):
        models.model_files(record, progress=False)
    assert not (tmp_path / "cache" / "data" / record.name).exists()


def test_unknown_model_names_the_choices():
    with pytest.raises(DreamError, match="bvlc_googlenet, places205_googlenet"):
        models.get_model("alexnet")


def test_without_its_archive_places205_gets_the_builders_definition_whole(tmp_path, monkeypatch):
    """The note, and the builder's definition written to the cache through a temporary file:
    a sweep's workers each write it and read it back, so none may see it half-written."""
    monkeypatch.setenv("DEEPDREAM_CAFFE_CACHE", str(tmp_path / "cache"))

    def unreachable(model, progress):
        raise DreamError("the archive cannot be fetched", "use a mirror")

    monkeypatch.setattr(models, "model_files", unreachable)
    heard = []
    record = models.MODELS["places205_googlenet"]
    first = models.model_definition(record, say=heard.append)
    second = models.model_definition(record, say=heard.append)  # replaces it, whole
    assert first == second and "builder's equivalent" in heard[0] and len(heard) == 2
    text = first.read_text()
    assert text.count('name: "loss3/classifier"') == 1 and "num_output: 205" in text
    assert sorted(p.name for p in first.parent.iterdir()) == [first.name]
