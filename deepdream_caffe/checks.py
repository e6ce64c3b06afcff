"""Checks made before Caffe sees an input: Caffe answers bad input with an abort.

Caffe's CHECK failures end the process (no exception, no message a user can act on). So the
sizes a dream will ask for, the weights file and the memory needed are checked here, in
Python, against the net definition, with the blob shapes of shapes.py (Caffe's own formulas
for every layer type it ships). Only a net with an allowed Python layer is checked as far as
its shapes are known, and otherwise handed to Caffe as it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import DreamError
from .shapes import (
    INT_MAX,
    ShapeError,
    TooLarge,
    TooSmall,
    Unknown,
    declared_input,
    infer_shapes,
    param_shapes,
)

__all__ = ["ShapeError", "TooSmall", "Unknown", "infer_shapes", "param_shapes"]


def _layers(model):
    return model.layer


def _first(values, default):
    return values[0] if len(values) else default


def _declared_hw(model) -> tuple:
    return declared_input(model)[2:]


def octave_sizes(height: int, width: int, octave_n: int, octave_scale: float) -> list:
    """The (H, W) of every octave, smallest first, as deepdream's nd.zoom makes them."""
    sizes = [(height, width)]
    for _ in range(octave_n - 1):
        h, w = sizes[-1]
        # scipy.ndimage.zoom's output shape: round(size * zoom)
        sizes.append((int(round(h * (1.0 / octave_scale))), int(round(w * (1.0 / octave_scale)))))
    return sizes[::-1]


def smallest_side(model) -> int:
    """The smallest input side (the same for height and width) every layer accepts."""
    for side in range(1, 4097):
        try:
            infer_shapes(model, side, side)
            return side
        except ShapeError:
            continue
    raise Unknown("no size up to 4096 works")


def check_sizes(
    model, end: str, height: int, width: int, octave_n: int, octave_scale: float
) -> list:
    """Refuse an image too small for ``end`` at some octave, or a size a fully connected layer
    cannot take; return the octave sizes. ``model`` is the net pruned to ``end``."""
    sizes = octave_sizes(height, width, octave_n, octave_scale)
    try:
        declared = infer_shapes(
            model, *_declared_hw(model), batch=declared_input(model)[0], allow_empty=True
        )  # the net as Caffe builds it
        for h, w in sizes:
            try:
                shapes = infer_shapes(model, h, w)
            except TooLarge as e:
                side = int(max(height, width) * (INT_MAX / e.count) ** 0.5 * 0.99)
                raise DreamError(
                    f"a {w}x{h} dream is too large for Caffe: {e}",
                    f"pass --max-size {side} to scale the image down first, or use a smaller image",
                ) from None
            except ShapeError as e:
                if not isinstance(e, TooSmall):
                    raise DreamError(
                        f"at octave {w}x{h}, {e}", "choose another image size or --end"
                    ) from None
                side = smallest_side(model)
                need = [_input_for(side, octave_n, octave_scale)] * 2
                octaves = f"{octave_n} octaves of {octave_scale}" if octave_n > 1 else "1 octave"
                fewer = ", or fewer --octave-n" if octave_n > 1 else ""
                raise DreamError(
                    f"the image ({width}x{height}) is too small for --end {end} with "
                    f"{octaves}: its smallest octave is {w}x{h}, and "
                    f"layer {e.layer} needs an input of at least {side}x{side}",
                    f"give an image of at least {need[0]}x{need[1]} pixels{fewer}, or a "
                    "shallower --end",
                ) from None
            for layer in _layers(model):
                if layer.type == "InnerProduct":
                    here, there = shapes[layer.bottom[0]], declared[layer.bottom[0]]
                    axis = layer.inner_product_param.axis % len(here)
                    if np.prod(here[axis:]) != np.prod(there[axis:]):
                        raise DreamError(
                            f"--end {end} goes through the fully connected layer {layer.name}, "
                            f"which takes only inputs of the definition's size "
                            f"({'x'.join(map(str, _declared_hw(model)[::-1]))}); "
                            f"octave {w}x{h} is not",
                            "choose a convolutional --end (`deepdream-caffe layers` lists them)",
                        )
            _check_params_fit(model, end, declared, shapes, (h, w))
    except Unknown:
        pass  # a layer type not modelled here: Caffe checks it
    return sizes


def _check_params_fit(model, end, declared, shapes, size):
    """Learned parameters are shaped at the declared input (e.g. a Scale over width): refuse
    an octave whose blobs they no longer fit, as Caffe would abort on it."""
    fixed, here = param_shapes(model, declared), param_shapes(model, shapes)
    for name, blobs in fixed.items():
        if here.get(name, blobs) != blobs:
            h, w = size
            raise DreamError(
                f"--end {end} goes through layer {name}, whose parameters "
                f"{blobs} fit only the definition's input size, not octave "
                f"{w}x{h}",
                "choose an --end before it",
            )


def _input_for(side: int, octave_n: int, octave_scale: float) -> int:
    """The smallest image side whose smallest octave is at least ``side``."""
    n = side
    while octave_sizes(n, n, octave_n, octave_scale)[0][0] < side:
        n += 1
    return n


def check_weights(model, data, weights: Path) -> None:
    """Refuse weights (``data``, the bytes of the file ``weights``) that are not a caffemodel or
    do not fit ``model``, as Caffe's ``CopyTrainedLayersFrom`` would: the same blob count and
    shape for every layer it names, and finite numbers."""
    from google.protobuf.message import DecodeError

    from .definition import import_caffe

    caffe_pb2 = import_caffe().proto.caffe_pb2

    weights = Path(weights)
    fix = "download the weights again (`deepdream-caffe fetch`), or pass the right --weights"
    check_weights_name(weights)
    source = caffe_pb2.NetParameter()
    try:
        source.ParseFromString(data)
    except DecodeError:
        raise DreamError(
            f"{weights} is not a Caffe weights file (corrupt or truncated)", fix
        ) from None
    # a 2014 caffemodel keeps its layers in the V1 field; Caffe upgrades it when it reads it
    stored = {layer.name: list(layer.blobs) for layer in [*source.layers, *source.layer]}
    if not any(stored.values()):
        raise DreamError(f"{weights} holds no weights", fix)
    expected = param_shapes(model)
    for layer in _layers(model):
        shapes = expected.get(layer.name, [])
        if layer.name not in stored:
            if shapes:
                raise DreamError(
                    f"{weights} has no weights for layer {layer.name}: it belongs to another net",
                    fix,
                )
            continue
        got = [_blob_shape(b) for b in stored[layer.name]]
        if len(got) != len(shapes) or not all(map(_shape_equals, shapes, stored[layer.name])):
            raise DreamError(
                f"{weights} does not fit the definition: layer {layer.name} has "
                f"weights of shape {got}, the definition needs {shapes}",
                fix,
            )
        # NaN reaching max pooling makes Caffe write outside its buffers (guards.py)
        if not all(
            np.isfinite(np.asarray(b.data or b.double_data)).all() for b in stored[layer.name]
        ):
            raise DreamError(
                f"{weights}: the weights of layer {layer.name!r} hold NaN or infinity", fix
            )


def check_weights_name(weights: Path) -> None:
    """Refuse HDF5 weights, by Caffe's rule (the name ends in .h5), before a byte is read."""
    if str(weights).endswith(".h5"):
        raise DreamError(
            f"{weights}: HDF5 weights (.h5) cannot be checked before Caffe reads "
            "them, so they are not accepted",
            "save them as a .caffemodel (pycaffe: net.save('x.caffemodel'))",
        )


def _blob_shape(blob):
    if len(blob.shape.dim):
        return tuple(blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)  # the legacy 4-D form


def _shape_equals(shape, blob) -> bool:
    """Caffe's Blob::ShapeEquals: a legacy 4-D blob matches the shape padded with leading 1s."""
    if any(blob.HasField(f) for f in ("num", "channels", "height", "width")):
        return len(shape) <= 4 and (1,) * (4 - len(shape)) + tuple(shape) == (
            blob.num,
            blob.channels,
            blob.height,
            blob.width,
        )
    return tuple(blob.shape.dim) == tuple(shape)


PROCESS_BYTES = 200 * 2**20  # Python, numpy, scipy, Caffe and its libraries, loaded (measured)


def estimate_bytes(model, sizes, notebook_net: bool) -> int:
    """Memory a dream needs at its largest octave, from Caffe's own allocations: every blob's
    data and diff, the diffs of the Split branches Caffe adds, each convolution's im2col
    buffer, max-pooling's argmax, LRN's scale, powers and scratch, the weights (and their
    gradients for the notebook's net), numpy's copies of the image (detail, rolls: about 12),
    the smaller octaves ``sizes[:-1]`` the dream keeps, and the process itself. Checked against a
    measured peak in tests/test_bad_input.py."""
    h, w = sizes[-1]
    shapes = infer_shapes(model, h, w)
    count = {name: int(np.prod(s)) for name, s in shapes.items()}
    floats = 2 * sum(count.values())
    readers = {}
    for layer in _layers(model):
        for b in layer.bottom:
            if b not in layer.top:
                readers[b] = readers.get(b, 0) + 1
        top = count[layer.top[0]] if len(layer.top) else 0
        if layer.type == "Convolution":
            k = _first(layer.convolution_param.kernel_size, 1)
            if k > 1:
                out_hw = int(np.prod(shapes[layer.top[0]][2:]))
                floats += shapes[layer.bottom[0]][1] * k * k * out_hw
        elif layer.type == "Pooling":
            floats += top  # the argmax
        elif layer.type == "LRN":  # the scale, its powers and two padded scratch blobs the
            plane = int(np.prod(shapes[layer.top[0]][2:]))  # build keeps (patches 0006, 0008)
            padded = (shapes[layer.top[0]][1] + layer.lrn_param.local_size - 1) * plane
            floats += 2 * top + 2 * padded + 2 * plane
    floats += sum(count[b] * n for b, n in readers.items() if n > 1)
    params = sum(int(np.prod(s)) for ps in param_shapes(model).values() for s in ps)
    floats += params * (2 if notebook_net else 1)
    floats += 12 * 3 * h * w + sum(3 * oh * ow for oh, ow in sizes[:-1])
    return 4 * floats + PROCESS_BYTES


def side_that_fits(model, size, notebook_net: bool, free: int) -> int | None:
    """The largest longer side (for --max-size) whose dream fits in ``free`` bytes."""
    h, w = size
    side = max(h, w)
    while side > 16:
        side = int(side * 0.95)
        scale = side / max(h, w)
        if estimate_bytes(model, [(round(h * scale), round(w * scale))], notebook_net) <= free:
            return side
    return None


WEIGHTS_SLACK = 64 * 2**20  # layer names, shapes and records around the numbers


def check_weights_size(model, weights: Path) -> int:
    """Refuse a weights file far larger than the whole definition's parameters could fill
    (float32 data and diff, plus ``WEIGHTS_SLACK``), or one too large to read into memory,
    from its size alone: before a byte of it is read. Returns the size it checked."""
    size = weights.stat().st_size
    try:
        count = sum(int(np.prod(s)) for ps in param_shapes(model).values() for s in ps)
    except (Unknown, TooSmall, KeyError, IndexError):
        count = None
    fix = "pass the weights that belong to this definition"
    if count is not None and size > 8 * count + WEIGHTS_SLACK:
        raise DreamError(
            f"{weights} is {size / 2**20:.0f} MiB, far more than the "
            f"{count * 4 / 2**20:.0f} MiB of parameters the definition holds",
            fix,
        )
    free = available_bytes()
    if free is not None and 3 * size > free:  # the bytes, and protobuf's parsed copy
        raise DreamError(
            f"{weights} is {size / 2**30:.1f} GiB, too large to read with "
            f"{free / 2**30:.1f} GiB of memory available",
            fix,
        )
    return size


def available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
