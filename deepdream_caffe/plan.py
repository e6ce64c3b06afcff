"""One run's facts, resolved once: the model, the checked definition, the weights, the sizes.

:func:`make_plan` turns a :class:`~deepdream_caffe.job.Job` into a frozen :class:`Plan` before
a pixel is decoded or a net is built: the model record, the definition parsed and upgraded
once (one ``upgrade_net_proto_text`` child), the weights read once (copied into an anonymous
memory file, from which every hash the run needs and the check that they fit are computed, and
which Caffe then reads, so the file cannot change in between), the mean and channel order, the
end layer, every octave size and the memory estimate. Everything after it (building the net in
the child process, the dream, the sidecar) takes the plan and re-resolves nothing. ``dream``
leaves the weights' hash and fit check to :func:`check_weights_later`, which runs while the
Caffe process builds its net from the copy, and ends it if they do not fit.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import math
import mmap
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from . import checks, guards, models
from .errors import DreamError, not_a_file
from .params import DreamParams


@dataclass(frozen=True)
class Weights:
    """The weights file as read once: where it was, what it held, and where Caffe reads it."""

    path: Path
    size: int
    fd: int  # an anonymous memory file holding exactly the bytes hashed
    # None until checked: read_weights(..., later=True) leaves that to check_weights_later
    sha256: str | None = None
    provenance: str | None = None  # published (verified), synthetic, or the user's

    @property
    def for_caffe(self) -> str:
        """The path Caffe opens: the memory file, as this process (or a forked child) sees it."""
        return f"/proc/self/fd/{self.fd}"

    def record(self) -> dict:
        """For the sidecar: the file, its size and sha256, and its provenance."""
        if self.sha256 is None:
            raise RuntimeError("the weights were not checked (check_weights_later)")
        return {
            "path": str(self.path.absolute()),
            "bytes": self.size,
            "sha256": self.sha256,
            "provenance": self.provenance,
        }


@dataclass(frozen=True)
class Plan:
    """Everything one run needs, checked; the net is built from this alone."""

    model_name: str  # a models.MODELS name, or "custom"
    definition_path: Path  # the .prototxt as given (for messages and the sidecar)
    definition: bytes  # the whole definition, upgraded, TEST phase, checked (serialized)
    definition_read: dict  # the file as read: path, bytes, sha256 of the bytes parsed (sidecar)
    weights: Weights
    mean: tuple  # B, G, R
    swap: tuple  # the net's input channels as indices into R, G, B
    params: DreamParams  # end included
    setup: str  # the net set-up: net.WHOLE (--notebook-net), net.REACH or net.FAST
    octaves: tuple  # per image: the (H, W) of every octave, smallest first
    memory: int | None  # estimated bytes of the largest dream, None where it cannot be told
    pooled: tuple  # the blobs max pooling reads: checked before every backward pass
    gpu: int | None = None
    threads: int | None = None
    tile: int | None = None  # --tile: the gradient in tiles of at most N x N (tile.py)

    def close(self) -> None:
        """Let go of the weights' memory file (a sweep makes one plan per task)."""
        with contextlib.suppress(OSError):
            os.close(self.weights.fd)

    @property
    def end(self) -> str:
        return self.params.end

    def model(self):
        """The definition as a ``NetParameter`` (a fresh copy)."""
        from .definition import import_caffe

        return import_caffe().proto.caffe_pb2.NetParameter.FromString(self.definition)

    def net_mean(self) -> np.ndarray:
        from .net import mean_in_net_order

        return mean_in_net_order(self.mean, self.swap)


def make_plan(job, end: str, sizes, names=None, say=None, check_weights_later=False) -> Plan:
    """Resolve and check ``job`` (its numbers already checked) for a dream at ``end``.

    ``sizes``: (H, W, octave_n) of every image that goes through the net (read from the files'
    headers); ``names``, when given, name them in errors; ``say`` hears what the user should
    know on the way (a model definition taken from the builder, say). With
    ``check_weights_later``, the weights are copied but may be left unchecked and unhashed
    (:func:`read_weights`): :func:`check_weights_later` finishes them, while the Caffe process
    builds its net (``worker.run``'s ``meanwhile``), and before anything is written.
    """
    from .definition import (
        check_buildable,
        check_dreamable,
        check_end,
        definition_bytes,
        notebook_reach,
        prune,
        read_definition,
    )
    from .sidecar import bytes_record

    definition_path, weights_path, mean, swap, model_name = model_config(job, say)
    # read once: the sidecar hashes the bytes parsed, not a file edited since
    source = definition_bytes(definition_path)
    model = read_definition(definition_path, job.allow_python_layers, source)
    check_end(model, end)
    pruned = prune(model, end)
    check_buildable(pruned, definition_path, job.allow_python_layers)
    check_dreamable(pruned, definition_path, end)
    # the net whose sizes a dream runs through, and the most this set-up builds
    reach = notebook_reach(model, end)
    sized = reach if job.notebook_net else pruned
    built = built_net(model, reach, job.notebook_net)
    # (the notebook's reach is the pruned net itself where the end needs every layer before it)
    if built.SerializeToString() != pruned.SerializeToString():
        check_buildable(built, definition_path, job.allow_python_layers)
        check_dreamable(built, definition_path, end)
    octaves = []
    for (h, w, octave_n), name in zip(sizes, names or [None] * len(sizes), strict=True):
        try:
            octaves.append(check_image(job, sized, end, h, w, octave_n))
            check_tiles(job, sized, end, octaves[-1])
        except DreamError as e:
            if name is None:
                raise
            raise DreamError(f"{name}: {e.problem}", e.fix) from None
    memory = check_memory(sized, max(octaves, key=lambda o: o[-1][0] * o[-1][1]), job)
    weights = read_weights(Path(weights_path), model, built, job, later=check_weights_later)
    params = replace(job.params, end=end)  # the job's parameters, the end layer resolved
    return Plan(
        model_name=model_name,
        definition_path=Path(definition_path),
        definition=model.SerializeToString(),
        weights=weights,
        mean=tuple(float(m) for m in mean),
        swap=tuple(swap),
        params=params,
        setup=net_setup(
            job.notebook_net, params.iter_n, octaves, len(reach.layer) > len(pruned.layer)
        ),
        octaves=tuple(tuple(o) for o in octaves),
        memory=memory,
        pooled=tuple(guards.max_pool_inputs(sized)),
        gpu=job.gpu,
        threads=job.threads,
        tile=getattr(job, "tile", None),
        definition_read=bytes_record(definition_path, source),
    )


# The data-gradient-only net (net.FAST) saves about a third of every step, but costs a second
# net and a check pass to set up: below this many pixel-steps (steps x pixels, over every
# octave of the largest image) the notebook's own net (net.REACH) is faster. Both give the same
# bits: the fast net is used only where it is checked to give the notebook net's.
FAST_MIN_WORK = 50_000


def net_setup(notebook_net: bool, iter_n: int, octaves, beyond: bool) -> str:
    """The net a dream is run on. ``beyond``: the notebook's net runs layers the end layer
    does not need (Places205's aux heads), whose sizes the pruned net spares the dream."""
    from . import net

    if notebook_net:
        return net.WHOLE
    work = max(iter_n * sum(h * w for h, w in sizes) for sizes in octaves)
    return net.FAST if beyond or work >= FAST_MIN_WORK else net.REACH


def model_config(job, say=None):
    """Resolve (definition, weights, mean, channel swap, model name) from the job; a published
    model's files are fetched (and verified) here."""
    if job.model_def:
        if not job.weights:
            raise DreamError("--model-def needs --weights", "pass the .caffemodel too")
        mean = job.mean or models.IMAGENET_MEAN_BGR
        return job.model_def, job.weights, mean, job.channel_swap or models.BGR, "custom"
    record = models.get_model(job.model)
    if job.weights:  # your own copy of the weights for a known architecture
        definition, weights = models.model_definition(record, say=say), job.weights
    else:
        definition, weights = models.model_files(record)
    mean = job.mean or (models.PLACES205_MEAN_BGR if job.places_mean else record.mean)
    return definition, weights, mean, job.channel_swap or record.channel_swap, record.name


def check_image(job, model, end, h, w, octave_n) -> list:
    """One image's octaves: their number and every size the net must take."""
    check_octave_count(h, w, octave_n, job.params.octave_scale)
    try:
        return checks.check_sizes(model, end, h, w, octave_n, job.params.octave_scale)
    except DreamError as e:
        if not job.notebook_net:
            raise
        raise DreamError(
            f"{e.problem} (with --notebook-net, as in the notebook, every layer before {end} runs)",
            "leave out --notebook-net (the "
            "default runs only the layers the end layer needs), or " + e.fix,
        ) from None


def check_octave_count(h, w, octave_n, octave_scale) -> None:
    """Refuse more octaves than the image has pixels for (before listing their sizes)."""
    if octave_n > 1 and (octave_n - 1) * math.log(octave_scale) > math.log(min(h, w)):
        most = 1 + int(math.log(min(h, w)) / math.log(octave_scale))
        raise DreamError(
            f"--octave-n {octave_n}: with --octave-scale {octave_scale} the "
            f"smallest octave of the {w}x{h} image would be below one pixel",
            f"give at most --octave-n {most}",
        )


def check_tiles(job, model, end, sizes) -> None:
    """Refuse a --tile whose tiles the net cannot take at some octave."""
    t = getattr(job, "tile", None)
    if not t:
        return
    from .tile import tile_sizes

    for h, w in tile_sizes(sizes, t):
        try:
            checks.check_sizes(model, end, h, w, 1, job.params.octave_scale)
        except DreamError as e:
            raise DreamError(
                f"--tile {t}: a tile of {w}x{h} does not go through --end {end} ({e.problem})",
                "give a larger --tile, or leave it out",
            ) from None


def check_memory(model, sizes, job) -> int | None:
    """Refuse a dream that would not fit in memory, with the estimate and a size that fits;
    return the estimate. ``sizes``: the (H, W) of every octave of the largest image."""
    from . import tile

    size = sizes[-1]
    free = checks.available_bytes()
    t = getattr(job, "tile", None)
    try:
        if t:
            need = tile.estimate_bytes(model, sizes, t, job.notebook_net)
        else:
            need = checks.estimate_bytes(model, sizes, job.notebook_net)
        if free is None or need <= 0.9 * free:
            return need
        fit = checks.side_that_fits(model, size, job.notebook_net, 0.9 * free)
        fit_tile = tile.tile_that_fits(model, sizes, job.notebook_net, 0.9 * free)
    except (checks.Unknown, checks.ShapeError):
        return None
    h, w = size
    what = (
        f"a {w}x{h} dream needs about {need / 2**30:.1f} GiB of memory and "
        f"{free / 2**30:.1f} GiB are available"
    )
    if fit is None:
        raise DreamError(
            what + ", and even a small image would not fit",
            "close other programs or use a machine with more memory",
        )
    if fit_tile is not None and fit_tile != t:
        raise DreamError(
            what + (f" with --tile {t}" if t else ""),
            f"pass --tile {fit_tile} to compute the gradient in tiles of that size (memory "
            f"follows the tile), or --max-size {fit} to scale the image down first",
        )
    raise DreamError(
        what, f"pass --max-size {fit} to scale the image down first, or use a smaller image"
    )


def read_weights(path: Path, whole, built, job, later=False) -> Weights:
    """Read the weights file once: its size checked first, then its bytes copied into an
    anonymous memory file, which is hashed, checked against ``built`` (the net Caffe will
    build) and is what Caffe reads. ``later``: leave the hash and the check to
    :func:`check_weights_later` (Caffe can read the copy already), unless the file is so large
    that this process parsing it beside the Caffe process could run out of memory."""
    if not path.is_file():
        raise not_a_file("weights file", path, "check the --weights path")
    checks.check_weights_name(path)
    checked = checks.check_weights_size(whole, path)
    fd = memory_copy(path, most=checked + 1)
    try:
        size = os.fstat(fd).st_size
        if size > checked:
            raise DreamError(
                f"weights file {path} held more than its size said: it grew while it was "
                "read, or it is not a file on disk (/proc)",
                "pass a weights file on disk that nothing is writing to",
            )
        weights = Weights(path, size, fd)
        if later:
            free = checks.available_bytes()
            later = free is not None and LATER_MEMORY * size <= free
        return weights if later else check(weights, built, job)
    except BaseException:
        os.close(fd)
        raise


# A check left for later runs beside the Caffe process, which parses the weights too: both
# copies, and protobuf's, must fit at once (checks.check_weights_size allows 3 x the size)
LATER_MEMORY = 6


def check_weights_later(plan: Plan, job) -> Plan:
    """``plan`` with the weights that :func:`make_plan` left unchecked checked and hashed (the
    plan as it was where they were checked already)."""
    if plan.weights.sha256 is not None:
        return plan
    from .definition import notebook_reach

    model = plan.model()
    built = built_net(model, notebook_reach(model, plan.end), job.notebook_net)
    return replace(plan, weights=check(plan.weights, built, job))


def built_net(model, reach, notebook_net: bool):
    """The most a run's set-up builds, which its weights must fit: the whole definition with
    --notebook-net, else ``reach``, every layer up to the end layer (the notebook's reach)."""
    return model if notebook_net else reach


def check(weights: Weights, built, job) -> Weights:
    """The weights hashed, checked against ``built`` and their provenance found, from their
    memory file."""
    size, path = weights.size, weights.path
    with contextlib.ExitStack() as stack:
        data = b""  # mmap refuses an empty file, which check_weights refuses anyway
        if size:
            data = mmap.mmap(
                weights.fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=mmap.PROT_READ
            )
            # a view that outlives this (a traceback's frame, the hash after a Ctrl-C)
            # keeps the mapping until it goes, rather than turning the error into another
            stack.callback(_close_quietly, data)
        # the hash on a second core (hashlib lets go of the GIL) while protobuf parses
        sha256 = hashlib.sha256()
        hashing = threading.Thread(target=sha256.update, args=(data,))
        hashing.start()
        try:
            with memoryview(data) as view:  # released even when the check raises
                checks.check_weights(built, view, path)
        finally:
            hashing.join()
        provenance = weights_provenance(path, data, job)
    return replace(weights, sha256=sha256.hexdigest(), provenance=provenance)


def _close_quietly(mapping) -> None:
    with contextlib.suppress(BufferError):
        mapping.close()


def memory_copy(path: Path, most: int) -> int:
    """An anonymous memory file holding a copy of at most ``most`` bytes of ``path`` (copied
    by the kernel where the file system lets it), numbered 3 or above: the Caffe process
    writes its log onto 1 and 2."""
    first = os.memfd_create("deepdream-weights", os.MFD_CLOEXEC)
    try:
        fd = fcntl.fcntl(first, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(first)
    try:
        with open(path, "rb") as source:
            copied = 0
            try:
                while n := os.sendfile(fd, source.fileno(), None, most - copied):
                    copied += n
                    if copied >= most:
                        break
            except OSError as e:  # a file system that cannot splice (/proc, say): read it
                if e.errno not in (errno.EINVAL, errno.ENOSYS) or copied:
                    raise
                while copied < most and (chunk := source.read(min(1 << 24, most - copied))):
                    copied += os.write(fd, chunk)  # all of it: a memory file takes it whole
    except BaseException:
        os.close(fd)
        raise
    return fd


def weights_provenance(path: Path, data: bytes, job) -> str:
    """Published (verified when fetched, or matched by checksum), synthetic, or the user's."""
    if not job.model_def and not job.weights:
        asset = models.get_model(job.model).weights
        return f"published: {job.model}, verified by {asset.filename}'s {asset.hash}"
    for model in models.MODELS.values():
        asset = model.weights
        algorithm, _, digest = asset.hash.partition(":")
        if model.archive_weights or (asset.size is not None and asset.size != len(data)):
            continue
        if hashlib.new(algorithm, data).hexdigest() == digest:
            return f"published: {model.name}, matched by {asset.hash}"
    # lab/synthetic.py's weights say what they are in their file name (and nothing else does)
    if "synthetic" in path.name.lower():
        return "synthetic (test weights, not a trained model)"
    return "user: not one of the published files"


def check_input(plan: Plan, img: np.ndarray, what: str) -> None:
    """The image as preprocess will give it to Caffe: finite and within the pixel range."""
    array = np.float32(np.rollaxis(img, 2)[list(plan.swap)]) - plan.net_mean()[:, None, None]
    guards.check_input(array, what)
