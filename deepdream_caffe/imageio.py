"""Reading images as the notebook did, and writing outputs so that none is ever half-written."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import PIL.Image

from .errors import DreamError


def load_image(path, log=None) -> np.ndarray:
    """``np.float32(PIL.Image.open(path))`` for RGB files (cell 10); other modes become RGB.

    EXIF orientation is ignored, as the notebook ignored it: the pixels are used as stored.
    """
    path = Path(path)
    if not path.is_file():
        raise DreamError(f"input image {path} does not exist", "check the path")
    try:
        with PIL.Image.open(path) as im:
            im.load()
            if im.mode != "RGB":
                if log:
                    log(f"{path}: converting {im.mode} to RGB")
                im = im.convert("RGB")
            return np.float32(im)
    except (OSError, SyntaxError, ValueError) as e:  # PIL's ways of saying "not an image"
        raise DreamError(f"cannot read {path} as an image ({e})",
                         "give a PNG or JPEG file") from e


@contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                               suffix=suffix or path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_image(img_uint8: np.ndarray, path, jpeg_quality: int = 95) -> None:
    """Write an 8-bit RGB image; the format follows the extension (PNG is lossless)."""
    path = Path(path)
    im = PIL.Image.fromarray(img_uint8)
    fmt = PIL.Image.registered_extensions().get(path.suffix.lower())
    options = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **options)


def save_array(array: np.ndarray, path) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def save_json(data: dict, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
