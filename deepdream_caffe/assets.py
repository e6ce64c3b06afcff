"""Verified downloads: a registry of files, mirror folders, and a hash-checked cache.

Every file the project downloads is an :class:`Asset` with a checksum. :func:`fetch` looks in
the folders of ``DEEPDREAM_CAFFE_MIRROR`` first (by file name), then downloads with pooch
into ``$DEEPDREAM_CAFFE_CACHE/data`` (default ``~/.cache/deepdream-caffe/data``). pooch
writes to a temporary file and moves it into place only after the hash matched, so a
partial or wrong file is never left under the expected name. Mirror folders are read only:
nothing in them is ever deleted, renamed or rewritten, even when the cache's folder is one of
them. This module never imports Caffe.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import DreamError

log = logging.getLogger(__name__)

NOTEBOOK_COMMIT = "bbc2ddf9e7632cc3f4d3e70211e85ae7169f366f"
NOTEBOOK_URL = f"https://raw.githubusercontent.com/google/deepdream/{NOTEBOOK_COMMIT}/"


@dataclass(frozen=True)
class Asset:
    """One downloadable file: its name in caches and mirrors, where it lives, its checksum."""

    filename: str
    url: str
    hash: str  # "sha256:<hex>" or "sha1:<hex>", as pooch spells it
    size: int | None = None  # bytes, when known


NOTEBOOK_ASSETS = {
    a.filename: a
    for a in [
        Asset(
            "sky1024px.jpg",
            NOTEBOOK_URL + "sky1024px.jpg",
            "sha256:779ddda9280908ccda18d7ade2f7f84805bf22cdbce3b61ddddd7ea4a4697050",
            65049,
        ),
        Asset(
            "flowers.jpg",
            NOTEBOOK_URL + "flowers.jpg",
            "sha256:bdcaf97d07f9619a3dde0b04694ec83c2b2a3188e3e24d88db952e81b9d9f740",
            30570,
        ),
        Asset(
            "dream.ipynb",
            NOTEBOOK_URL + "dream.ipynb",
            "sha256:96c829d1e7d231850504c4cae3fd4d34c35cecc86fd626c00344834bedfb88f7",
            827939,
        ),
    ]
}


def cache_root() -> Path:
    """``$DEEPDREAM_CAFFE_CACHE``, default ``~/.cache/deepdream-caffe``."""
    return Path(os.environ.get("DEEPDREAM_CAFFE_CACHE") or Path.home() / ".cache/deepdream-caffe")


def cache_dir() -> Path:
    """Where downloads are kept: ``$DEEPDREAM_CAFFE_CACHE/data``."""
    return cache_root() / "data"


def mirror_dirs() -> list[Path]:
    """The folders named by ``DEEPDREAM_CAFFE_MIRROR`` (a path list, like PATH)."""
    value = os.environ.get("DEEPDREAM_CAFFE_MIRROR", "")
    return [Path(p) for p in value.split(os.pathsep) if p]


def file_hash(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def matches(path: Path, asset: Asset) -> bool:
    """True if the file at ``path`` has the asset's size (when known) and checksum."""
    algorithm, _, digest = asset.hash.partition(":")
    if asset.size is not None and path.stat().st_size != asset.size:
        return False
    return file_hash(path, algorithm) == digest


def fetch(asset: Asset, progress: bool = True) -> Path:
    """Return the path of a verified copy of ``asset``: mirror, then cache, then download.

    A mirror copy with another checksum is never used (nor changed): it is named in the error
    when no good copy can be had, and in a warning when one can.
    """
    rejected = []
    for folder in mirror_dirs():
        candidate = folder / asset.filename
        if candidate.is_file():
            if matches(candidate, asset):
                return candidate
            rejected.append(candidate)
    try:
        path = _cached_or_downloaded(asset, progress)
    except DreamError as e:
        rejected = [c for c in rejected if str(c) not in e.problem]  # not named twice
        if rejected:
            e.problem += f"; {_rejected(rejected, asset)}"
            copies = " and ".join(map(str, rejected))
            e.fix = f"replace {copies} with the published file, or {e.fix}"
        raise
    if rejected:
        log.warning("%s", _rejected(rejected, asset))
    return path


def _rejected(copies: list[Path], asset: Asset) -> str:
    return f"ignored {', '.join(map(str, copies))}: not the published file ({asset.hash})"


def _cached_or_downloaded(asset: Asset, progress: bool) -> Path:
    target = cache_dir() / asset.filename
    if target.is_file() and not matches(target, asset):
        if is_mirror(target.parent):
            raise DreamError(
                f"{target} does not have the checksum {asset.hash}; it is in a "
                "folder of DEEPDREAM_CAFFE_MIRROR, which is never changed",
                "replace it with a good copy, or set DEEPDREAM_CAFFE_CACHE to another folder",
            )
        log.warning("removing %s: its checksum is not %s", target, asset.hash)
        target.unlink()
    if target.is_file():
        return target

    import pooch

    pooch.get_logger().setLevel("WARNING")  # its "Downloading ..." line; the bar says enough
    writable_cache(target.parent)
    try:
        downloader = pooch.HTTPDownloader(progressbar=progress, timeout=60)
        path = pooch.retrieve(
            asset.url,
            known_hash=asset.hash,
            fname=asset.filename,
            path=target.parent,
            downloader=downloader,
        )
    except ValueError as e:  # pooch: hash mismatch (it has already removed the download)
        raise DreamError(
            f"{asset.url} downloaded, but {e}; the file was not kept",
            "check the address or download it yourself and put it in a folder "
            "of DEEPDREAM_CAFFE_MIRROR",
        ) from e
    except OSError as e:  # writing into the cache: permissions, a full disk
        if not isinstance(e, ConnectionError) and e.filename is not None:
            raise DreamError(
                f"cannot write {asset.filename} into the download cache "
                f"{target.parent} ({e.strerror})",
                CACHE_FIX,
            ) from e
        raise _unreachable(asset, e) from e
    except Exception as e:  # network errors of every kind
        raise _unreachable(asset, e) from e
    path = Path(path)
    if asset.size is not None and path.stat().st_size != asset.size:  # belt and braces
        if not is_mirror(path.parent):
            path.unlink()
        raise DreamError(f"{asset.url} has the wrong size", "try again later")
    return path


CACHE_FIX = (
    "set DEEPDREAM_CAFFE_CACHE to a folder you can write to, or put the file in a "
    "folder listed in DEEPDREAM_CAFFE_MIRROR"
)


def is_mirror(folder: Path) -> bool:
    """True if ``folder`` is one of the DEEPDREAM_CAFFE_MIRROR folders (by identity)."""
    for mirror in mirror_dirs():
        try:
            if os.path.samefile(mirror, folder):
                return True
        except OSError:
            if mirror.resolve() == folder.resolve():
                return True
    return False


def writable_cache(folder: Path) -> None:
    """Create the cache folder, or say in one line why it cannot be used."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DreamError(
            f"cannot use the download cache {folder} ({e.strerror or e}: "
            "DEEPDREAM_CAFFE_CACHE must name a folder)",
            CACHE_FIX,
        ) from None
    if not os.access(folder, os.W_OK):
        raise DreamError(f"the download cache {folder} is not writable", CACHE_FIX)


def _unreachable(asset: Asset, e: Exception) -> DreamError:
    mirrors = os.pathsep.join(str(m) for m in mirror_dirs()) or "unset"
    reason = f"{type(e).__name__}: {str(e)[:120]}"
    if "NameResolution" in str(e) or "Connection refused" in str(e):
        reason = "the host cannot be reached"
    return DreamError(
        f"cannot download {asset.filename} from {asset.url} ({reason})",
        f"put a copy named {asset.filename} in a folder listed in DEEPDREAM_CAFFE_MIRROR "
        f"(now: {mirrors}), or pass your own file (--weights for model weights)",
    )
