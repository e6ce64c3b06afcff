"""Reading images as the notebook did, and writing outputs so that none is ever half-written.

Reading is checked before any pixel reaches Caffe: the size comes from the file's header
first (:func:`image_size`), so a small file declaring a huge image is refused before it is
decoded; float images must hold finite values on the 0..255 scale. Writing goes through
temporary names beside the target, renamed into place together (:func:`all_or_nothing`),
with the permissions the umask gives a new file.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import tempfile
import time
import warnings
from contextlib import ExitStack, contextmanager, nullcontext, suppress
from pathlib import Path

import numpy as np
import PIL.Image

from . import interrupts
from .errors import DreamError, not_a_file

READ_FIX = "give a PNG or JPEG file"


def read_bytes(path) -> bytes:
    """The bytes of an input image, read once (decoded and hashed from the same bytes)."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file("input image", path, "check the path")
    return path.read_bytes()


@contextmanager
def _opened(path, data=None):
    """``PIL.Image.open`` with the errors and Pillow's own size warning turned into ours;
    ``data``: the file's bytes, where already read (errors still name ``path``)."""
    path = Path(path)
    if data is None and not path.is_file():
        raise not_a_file("input image", path, "check the path")
    try:
        with warnings.catch_warnings():
            # sizes are decided by image_size and the memory check, not by Pillow's warning
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            with PIL.Image.open(path if data is None else io.BytesIO(data)) as im:
                yield im
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
        raise DreamError(f"cannot read {path} as an image ({e})", READ_FIX) from e


def scaled_size(size, max_size=None):
    """(W, H) after ``--max-size`` scaling (the longer side at most ``max_size``)."""
    if max_size is None or max(size) <= max_size:
        return tuple(size)
    scale = max_size / max(size)
    return tuple(max(1, round(d * scale)) for d in size)


def image_size(path, max_size=None) -> tuple:
    """(H, W) the dream will get, read from the file's header alone (nothing is decoded)."""
    with _opened(path) as im:
        w, h = scaled_size(im.size, max_size)
    return h, w


def decode_bytes(path) -> int:
    """Memory that decoding ``path`` takes: its pixels, as bytes and as float32 RGB."""
    with _opened(path) as im:
        w, h = im.size
        bands = len(im.getbands())
    return w * h * (4 * bands + 2 * 3 * 4)


def load_image(path, log=None, max_size=None, note=None, data=None) -> np.ndarray:
    """``np.float32(PIL.Image.open(path))`` for RGB files (cell 10); other modes become RGB.

    EXIF orientation is ignored, as the notebook ignored it: the pixels are used as stored
    (``log`` hears about it). ``max_size`` (opt-in) scales the image down first, so that its
    longer side is at most that many pixels (Lanczos). ``note`` hears what the user should
    know even without ``--verbose``: an animated image gives its first frame. ``data``: the
    file's bytes, where already read.
    """
    path = Path(path)
    with _opened(path, data) as im:
        frames = getattr(im, "n_frames", 1)
        if note and frames > 1:
            note(f"{path}: an animated image of {frames} frames; dreaming on the first")
        try:
            im.load()
        except (OSError, SyntaxError, ValueError) as e:
            raise DreamError(f"cannot read {path} as an image ({e})", READ_FIX) from e
        if log and im.getexif().get(EXIF_ORIENTATION, 1) != 1:
            log(f"{path}: EXIF orientation ignored (the pixels are used as stored)")
        if im.mode != "RGB":
            if log:
                log(f"{path}: converting {im.mode} to RGB")
            im = to_rgb(im, path)
        size = scaled_size(im.size, max_size)
        if size != im.size:
            if log:
                log(f"{path}: scaling {im.size[0]}x{im.size[1]} down to {size[0]}x{size[1]}")
            im = im.resize(size, PIL.Image.LANCZOS)
        return np.float32(im)


EXIF_ORIENTATION = 0x0112


def to_rgb(im, path="the image"):
    """RGB from any mode. 16- and 32-bit grey is scaled to 8 bits by its type's range; float
    grey must be finite and on the 0..255 scale (a 0..1 float image would dream black)."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        im = PIL.Image.fromarray(np.uint8(np.asarray(im, dtype=np.uint16) >> 8))
    elif im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        if im.mode == "F":
            check_float_pixels(a, path)
        top = 65535.0 if im.mode == "I" and a.max() > 255 else 255.0
        im = PIL.Image.fromarray(np.uint8(np.clip(a / top * 255.0, 0, 255)))
    if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
        # transparent pixels over white, as image viewers show them
        rgba = im.convert("RGBA")
        white = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def check_float_pixels(a: np.ndarray, path) -> None:
    """Refuse float pixels that are not finite, or that look like the 0..1 scale."""
    fix = "save it as an 8-bit PNG (values 0..255)"
    if not np.isfinite(a).all():
        raise DreamError(f"{path} holds pixels that are not finite numbers (NaN or infinity)", fix)
    if a.size and a.min() >= 0 and a.max() <= 1 and a.max() > 0:
        raise DreamError(
            f"{path} holds floating-point pixels in 0..1; the notebook's scale is "
            "0..255, so it would dream on a black image",
            fix + ", or multiply its values by 255",
        )


def name_max(folder) -> int:
    """The longest file name the file system of ``folder`` takes."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def temporary_name(path) -> tuple:
    """(prefix, suffix) of the temporary file written beside ``path``."""
    path = Path(path)
    return f".{path.name}.", path.suffix


def check_name_fits(path) -> None:
    """Refuse an output name whose temporary name the file system cannot hold."""
    path = Path(path)
    prefix, suffix = temporary_name(path)
    longest = len(prefix) + 8 + len(suffix)  # mkstemp adds 8 random characters
    limit = name_max(path.parent if path.parent.is_dir() else ".")
    if len(path.name.encode()) > limit or longest > limit:
        raise DreamError(
            f"output name {path.name[:40]}... is too long ({len(path.name)} "
            f"characters; its temporary name needs {longest} and the file system "
            f"takes {limit})",
            "choose a shorter name",
        )


def umask() -> int:
    """The process's umask. Reading it sets it for a moment: held, so that a signal between
    the two calls cannot leave it changed for every file written later."""
    with interrupts.held():
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _own_mode(fd) -> None:
    """Give a file from mkstemp (0600) the mode the umask gives a new file; close it."""
    try:
        os.fchmod(fd, 0o666 & ~umask())
    finally:
        os.close(fd)


def _new_temporary(path) -> Path:
    path = Path(path)
    prefix, suffix = temporary_name(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=suffix)
    try:
        _own_mode(fd)
    except OSError:
        os.unlink(tmp)
        raise
    return Path(tmp)


@contextmanager
def atomic_path(path, suffix=None):
    """Yield a temporary path beside ``path``; rename it to ``path`` only on success.

    The file gets the mode a new file gets from the umask (mkstemp alone would make it 0600).
    """
    path = Path(path)
    made = []
    try:
        with interrupts.held():  # the file, and its name where the clean-up below sees it
            made.append(_new_temporary(path))
        yield made[0]
        os.replace(made[0], path)
    finally:
        for tmp in made:
            if os.path.exists(tmp):
                os.unlink(tmp)


@contextmanager
def all_or_nothing():
    """Collect writes: they land together when the block ends well, or not at all.

    Yields ``batch``; pass it to the save functions. Each write goes to a temporary file,
    renamed into place only after every write of the block has succeeded. Files the renames
    replace are kept (hard links) until every rename has worked, and put back if one fails.
    """
    pending = []

    def batch(path):
        with interrupts.held():  # the file, and its name where the clean-up below sees it
            pending.append((_new_temporary(path), Path(path)))
        return pending[-1][0]

    try:
        yield batch
        with interrupts.held(), _folders_locked(path.parent for _, path in pending):
            _commit(pending)  # a signal after one rename: every rename first, not a part
    finally:
        for tmp, _ in pending:
            if os.path.lexists(tmp):
                os.unlink(tmp)


# A batch's renames take microseconds; a folder locked longer is a zoom's or a video's, held
# for its whole run (:func:`folder_held`): the renames then go on unlocked, not wait for it.
COMMIT_WAIT_S = 5.0


@contextmanager
def _folders_locked(folders):
    """Hold an exclusive flock on each folder: another command's renames into the same
    names wait, so an image and its sidecar always land from one run (last one wins)."""
    with ExitStack() as stack:
        # each folder once, in one order (no deadlock): a folder named twice, through a
        # symbolic link, would wait for this process's own lock
        for folder in sorted({os.path.realpath(f) for f in folders}):
            with suppress(OSError):  # a folder that cannot be opened or locked: unlocked
                fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
                stack.callback(os.close, fd)
                deadline = time.monotonic() + COMMIT_WAIT_S
                while not _flocked(fd) and time.monotonic() < deadline:
                    time.sleep(0.005)
        yield


def _flocked(fd) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


@contextmanager
def folder_held(folder, busy: DreamError):
    """An exclusive flock on ``folder`` while a command writes its frames there: a second
    command into the same folder is refused with ``busy``, rather than mixing the two runs'
    frames under one record (or removing the other's files as its own strays)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:  # a folder this process may write but not open: no lock, as before
        yield
        return
    try:
        try:
            locked = _flocked(fd)
        except OSError:  # a file system without flock (some NFS): no lock, as before
            locked = True
        if not locked:
            raise busy
        yield
    finally:
        os.close(fd)


def _commit(pending) -> None:
    """Rename every (temporary, target) pair; on any failure, restore every target."""
    kept = {}  # target: a second name for the file it held, until every rename has worked
    done = []  # targets renamed into place
    try:
        for tmp, path in pending:
            if path.exists():
                kept[path] = _keep_aside(path)
            os.replace(tmp, path)
            done.append(path)
    except BaseException:
        for path in reversed(done):
            with suppress(OSError):  # put back as much as can be put back
                if path in kept:
                    os.replace(kept.pop(path), path)
                else:
                    path.unlink()
        raise
    finally:
        for old in kept.values():
            if os.path.lexists(old):
                os.unlink(old)


def _keep_aside(path: Path) -> Path:
    """A second name for ``path``'s current file (a hard link, or a copy where links fail)."""
    kept = _new_temporary(path.with_name(path.name + ".old"))
    os.unlink(kept)
    try:
        os.link(path, kept)
    except OSError:
        import shutil

        try:
            shutil.copy2(path, kept)
        except BaseException:  # a full disk mid-copy: no part of the copy stays
            with suppress(OSError):
                os.unlink(kept)
            raise
    return kept


def _target(path, batch):
    return atomic_path(path) if batch is None else nullcontext(batch(path))


def image_format(suffix: str) -> str | None:
    """PIL's format for a file suffix (".png": "PNG"); None for none."""
    PIL.Image.preinit()  # PNG, JPEG, BMP, GIF, PPM: without importing every other plugin
    return PIL.Image.EXTENSION.get(suffix) or PIL.Image.registered_extensions().get(suffix)


def save_image(img_uint8: np.ndarray, path, jpeg_quality: int = 95, batch=None) -> None:
    """Write an 8-bit RGB image; the format follows the extension (PNG is lossless)."""
    path = Path(path)
    im = PIL.Image.fromarray(img_uint8)
    fmt = image_format(path.suffix.lower())
    options = {"quality": jpeg_quality} if fmt == "JPEG" else {}
    with _target(path, batch) as tmp:
        im.save(tmp, format=fmt, **options)


def save_array(array: np.ndarray, path, batch=None) -> None:
    with _target(path, batch) as tmp, open(tmp, "wb") as f:
        # through f.write, not numpy's tofile: a short write of tofile says only
        # "N requested and M written", never why (a full disk, a file-size limit)
        np.save(_Writes(f), array)


class _Writes:
    """Only ``write``: numpy then writes through it, and an error keeps its errno."""

    def __init__(self, f):
        self.write = f.write


def save_json(data: dict, path, batch=None) -> None:
    with _target(path, batch) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
