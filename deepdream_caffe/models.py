"""The models DeepDream runs on, as records of data (not code branches).

A record says where the definition and the weights come from, how they are verified, and how
images are fed to the net (mean, channel order). ``models/<name>/readme.md`` holds the same
facts in the Caffe Model Zoo's format for people; tests/test_models.py checks they agree.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .assets import (
    CACHE_FIX,
    NOTEBOOK_ASSETS,
    Asset,
    cache_dir,
    fetch,
    is_mirror,
    writable_cache,
)
from .build import caffe_source_dir
from .errors import DreamError
from .imageio import atomic_path

# The notebook's mean, BGR, "ImageNet mean, training set dependent" (dream.ipynb cell 3).
IMAGENET_MEAN_BGR = (104.0, 116.0, 122.0)
# Places205's own training mean, BGR (opt-in: the notebook used the ImageNet mean).
PLACES205_MEAN_BGR = (105.487823486328, 113.741088867188, 116.060394287109)
# The notebook's channel swap: the reference nets take BGR.
BGR = (2, 1, 0)


@dataclass(frozen=True)
class ModelRecord:
    name: str
    title: str
    weights: Asset  # the .caffemodel, or an archive holding it
    num_classes: int
    licence: str
    mean: tuple = IMAGENET_MEAN_BGR  # BGR, subtracted from the input
    channel_swap: tuple = BGR
    default_end: str = "inception_4c/output"  # the notebook's default layer
    definition: str = ""  # a path inside the verified Caffe source tree
    archive_definition: str = ""  # or: a file name in the weights archive (any folder)
    archive_weights: str = ""  # the file name of the .caffemodel in the weights archive


MODELS = {
    m.name: m
    for m in [
        ModelRecord(
            name="bvlc_googlenet",
            title="BAIR/BVLC GoogleNet (ImageNet, 1000 classes)",
            weights=Asset(
                "bvlc_googlenet.caffemodel",
                "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel",
                "sha1:405fc5acd08a3bb12de8ee5e23a96bec22f08204",
                53533754,
            ),
            num_classes=1000,
            licence="unrestricted",
            definition="models/bvlc_googlenet/deploy.prototxt",
        ),
        ModelRecord(
            name="places205_googlenet",
            title="Places205-GoogLeNet (MIT, 205 scene classes)",
            # The sha1 was published by a third party, not by MIT: see models/places205_googlenet.
            weights=Asset(
                "googlenet_places205.tar.gz",
                "http://places.csail.mit.edu/model/googlenet_places205.tar.gz",
                "sha1:d767debf686fa15df1e05fbc9b4598076127134a",
            ),
            num_classes=205,
            licence="Creative Commons Attribution (MIT Places project; "
            "see models/places205_googlenet)",
            archive_definition="deploy_places205.protxt",
            archive_weights="googlelet_places205_train_iter_2400000.caffemodel",
        ),
    ]
}


def get_model(name: str) -> ModelRecord:
    try:
        return MODELS[name]
    except KeyError:
        raise DreamError(
            f"unknown model {name!r}",
            f"choose one of {', '.join(MODELS)}, or pass --model-def and --weights",
        ) from None


def model_files(model: ModelRecord, progress: bool = True) -> tuple[Path, Path]:
    """Return verified (definition, weights) paths, downloading what is missing."""
    archive = fetch(model.weights, progress=progress)
    if not model.archive_weights:
        return caffe_source_dir() / model.definition, archive
    folder = cache_dir() / model.name
    wanted = [model.archive_definition, model.archive_weights]
    if not all((folder / m).is_file() for m in wanted):
        _extract(archive, wanted, folder)
    return folder / model.archive_definition, folder / model.archive_weights


def model_definition(model: ModelRecord, progress: bool = True, say=None) -> Path:
    """The model's .prototxt. Places205's comes from its archive; where that cannot be had,
    the GoogLeNet builder's equivalent (205 classes, auxiliary heads) is written to the cache,
    and ``say`` hears about it."""
    if not model.archive_definition:
        return caffe_source_dir() / model.definition
    try:
        return model_files(model, progress)[0]
    except DreamError:
        from .googlenet import googlenet

        path = cache_dir() / model.name / "deploy_from_builder.prototxt"
        writable_cache(path.parent)  # before the note: a refusal is its one line
        if say:
            say(
                f"note: {model.name}'s own definition is not available (its archive cannot be "
                "fetched); using the GoogLeNet builder's equivalent"
            )
        try:  # whole or not at all: a sweep's workers each write it, and each reads it back
            with atomic_path(path) as tmp:
                tmp.write_text(str(googlenet(model.num_classes, aux_heads=True)))
        except OSError as e:  # a full disk: the cache is the place to name, not a bare errno
            raise DreamError(
                f"cannot write {path.name} into the download cache {path.parent} "
                f"({e.strerror or e})",
                CACHE_FIX,
            ) from None
        return path


def fetch_named(what: str, say) -> list[Path]:
    """``deepdream-caffe fetch WHAT``: models, assets, all, or one model or notebook file.

    Fetches every file it can; one failure is raised as it is, several are each ``say``-d and
    summed up in one error."""
    weights = {name: m.weights for name, m in MODELS.items()}
    groups = {"models": list(weights.values()), "assets": list(NOTEBOOK_ASSETS.values())}
    groups["all"] = groups["models"] + groups["assets"]
    wanted = groups.get(what) or [{**weights, **NOTEBOOK_ASSETS}[what]]
    paths, failures = [], []
    for asset in wanted:
        try:
            paths.append(fetch(asset))
        except DreamError as e:
            failures.append(e)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        for e in failures:
            say(f"deepdream-caffe: error: {e}")
        raise DreamError(
            f"{len(failures)} of {len(wanted)} files could not be fetched", "see the messages above"
        )
    return paths


def _extract(archive: Path, names: list[str], folder: Path) -> None:
    """Extract the files called ``names`` (wherever they lie in the archive) into ``folder``,
    flat, all at once: a temporary folder, then a rename."""
    if folder.exists() and is_mirror(folder.parent):
        raise DreamError(
            f"{folder} lacks {', '.join(names)}; it is in a folder of "
            "DEEPDREAM_CAFFE_MIRROR, which is never changed",
            "complete it there, or set DEEPDREAM_CAFFE_CACHE to another folder",
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=folder.name + ".part-"))
    try:
        with tarfile.open(archive) as tar:
            files = [m for m in tar.getmembers() if m.isfile()]
            found = {
                name: [m for m in files if PurePosixPath(m.name).name == name] for name in names
            }
            missing = [name for name, members in found.items() if not members]
            if missing:
                held = ", ".join(m.name for m in files[:20]) or "no files"
                more = f" and {len(files) - 20} more" if len(files) > 20 else ""
                raise DreamError(
                    f"{archive} does not contain {', '.join(missing)}; it holds {held}{more}",
                    "delete it so that it is downloaded again",
                )
            for name, members in found.items():
                source = tar.extractfile(members[0])
                with source, open(tmp / name, "wb") as out:
                    shutil.copyfileobj(source, out)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
