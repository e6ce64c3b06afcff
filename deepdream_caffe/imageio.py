"""Reading images as the notebook did, and writing outputs so that none is ever half-written."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path

import numpy as np
import PIL.Image

from .errors import DreamError


def load_image(path, log=None, max_size=None) -> np.ndarray:
    """``np.float32(PIL.Image.open(path))`` for RGB files (cell 10); other modes become RGB.

    EXIF orientation is ignored, as the notebook ignored it: the pixels are used as stored
    (``log`` hears about it). ``max_size`` (opt-in) scales the image down first, so that its
    longer side is at most that many pixels (Lanczos).
    """
    path = Path(path)
    if not path.is_file():
        raise DreamError(f"input image {path} does not exist", "check the path")
    try:
        with PIL.Image.open(path) as im:
            im.load()
            if log and im.getexif().get(EXIF_ORIENTATION, 1) != 1:
                log(f"{path}: EXIF orientation ignored (the pixels are used as stored)")
            if im.mode != "RGB":
                if log:
                    log(f"{path}: converting {im.mode} to RGB")
                im = to_rgb(im)
            if max_size is not None and max(im.size) > max_size:
                scale = max_size / max(im.size)
                size = tuple(max(1, round(d * scale)) for d in im.size)
                if log:
                    log(f"{path}: scaling {im.size[0]}x{im.size[1]} down to {size[0]}x{size[1]}")
                im = im.resize(size, PIL.Image.LANCZOS)
            return np.float32(im)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise DreamError(f"cannot read {path} as an image ({e})",
                         "give a PNG or JPEG file") from e


EXIF_ORIENTATION = 0x0112


def to_rgb(im):
    """RGB from any mode. 16- and 32-bit grey is scaled to 8 bits by its type's range."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        im = PIL.Image.fromarray(np.uint8(np.asarray(im, dtype=np.uint16) >> 8))
    elif im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode == "I" and a.max() > 255 else 255.0
        im = PIL.Image.fromarray(np.uint8(np.clip(a / top * 255.0, 0, 255)))
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        # transparent pixels over white, as image viewers show them
        rgba = im.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


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


@contextmanager
def all_or_nothing():
    """Collect writes: they land together when the block ends well, or not at all.

    Yields ``batch``; pass it to the save functions. Each write goes to a temporary file,
    renamed into place only after every write of the block has succeeded.
    """
    with ExitStack() as stack:
        yield lambda path: stack.enter_context(atomic_path(path))


def _target(path, batch):
    return atomic_path(path) if batch is None else nullcontext(batch(path))


def save_image(img_uint8: np.ndarray, path, jpeg_quality: int = 95, batch=None) -> None:
    """Write an 8-bit RGB image; the format follows the extension (PNG is lossless)."""
    path = Path(path)
    im = PIL.Image.fromarray(img_uint8)
    fmt = PIL.Image.registered_extensions().get(path.suffix.lower())
    options = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    with _target(path, batch) as tmp:
        im.save(tmp, format=fmt, **options)


def save_array(array: np.ndarray, path, batch=None) -> None:
    with _target(path, batch) as tmp:
        np.save(tmp, array)


def save_json(data: dict, path, batch=None) -> None:
    with _target(path, batch) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
