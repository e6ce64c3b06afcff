"""Checks made before Caffe sees an input: Caffe answers bad input with an abort.

Caffe's CHECK failures end the process (no exception, no message a user can act on). So the
sizes a dream will ask for, the weights file and the memory needed are checked here, in
Python, against the net definition: blob shapes follow from Caffe's own formulas for the
layer types GoogLeNet-style nets use. Nets with other layer types are checked as far as
possible and otherwise handed to Caffe as they are.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .errors import DreamError

PASS_THROUGH = {"ReLU", "LRN", "Dropout", "Softmax", "Sigmoid", "TanH", "Split"}


class Unknown(Exception):
    """The net holds a layer whose shapes this module does not know."""


def _layers(model):
    return model.layer if len(model.layer) else model.layers


def _first(values, default):
    return values[0] if len(values) else default


def _declared_input(model):
    """(C, H, W) of the net's input as the definition declares it."""
    for layer in _layers(model):
        if layer.type == "Input":
            return tuple(layer.input_param.shape[0].dim[1:])
    if len(model.input_shape):
        return tuple(model.input_shape[0].dim[1:])
    if len(model.input_dim) >= 4:
        return tuple(model.input_dim[1:4])
    raise Unknown("no input shape")


def infer_shapes(model, height: int, width: int) -> dict:
    """Blob shapes (C, H, W) or (N,) for an input of ``height`` x ``width``, as Caffe computes
    them. Raises :class:`TooSmall` naming the first layer whose output would be empty."""
    channels = _declared_input(model)[0]
    shapes = {"data": (channels, height, width)}
    for layer in _layers(model):
        kind = layer.type
        if kind == "Input":
            continue
        bottom = [shapes[b] for b in layer.bottom]
        if kind == "Convolution":
            p = layer.convolution_param
            k, s, pad = _first(p.kernel_size, 1), _first(p.stride, 1), _first(p.pad, 0)
            c, h, w = bottom[0]
            h, w = ((d + 2 * pad - k) // s + 1 for d in (h, w))
            top = (p.num_output, h, w)
        elif kind == "Pooling":
            p = layer.pooling_param
            c, h, w = bottom[0]
            if p.global_pooling:
                top = (c, 1, 1)
            else:
                top = (c, *(_pooled(d, p.kernel_size, p.stride, p.pad) for d in (h, w)))
        elif kind == "Concat":
            top = (sum(b[0] for b in bottom), *bottom[0][1:])
        elif kind == "InnerProduct":
            top = (layer.inner_product_param.num_output,)
        elif kind in PASS_THROUGH:
            top = bottom[0]
        else:
            raise Unknown(kind)
        if min(top) < 1:
            raise TooSmall(layer.name)
        for name in layer.top:
            shapes[name] = top
    return shapes


def _pooled(size, kernel, stride, pad):
    """Caffe's pooling output size: rounded up, minus a last window starting in the padding."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


class TooSmall(Exception):
    def __init__(self, layer):
        super().__init__(layer)
        self.layer = layer


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
        except TooSmall:
            continue
    raise Unknown("no size up to 4096 works")


def check_sizes(model, end: str, height: int, width: int, octave_n: int,
                octave_scale: float) -> list:
    """Refuse an image too small for ``end`` at some octave, or a size a fully connected layer
    cannot take; return the octave sizes. ``model`` is the net pruned to ``end``."""
    sizes = octave_sizes(height, width, octave_n, octave_scale)
    try:
        declared = infer_shapes(model, *_declared_input(model)[1:])
        for h, w in sizes:
            try:
                shapes = infer_shapes(model, h, w)
            except TooSmall as e:
                side = smallest_side(model)
                need = [_input_for(side, octave_n, octave_scale)] * 2
                raise DreamError(
                    f"the image ({width}x{height}) is too small for --end {end} with "
                    f"{octave_n} octaves of {octave_scale}: its smallest octave is {w}x{h}, and "
                    f"layer {e.layer} needs an input of at least {side}x{side}",
                    f"give an image of at least {need[0]}x{need[1]} pixels, or fewer "
                    f"--octave-n, or a shallower --end") from None
            for layer in _layers(model):
                if layer.type == "InnerProduct":
                    here, there = shapes[layer.bottom[0]], declared[layer.bottom[0]]
                    if here != there:
                        raise DreamError(
                            f"--end {end} goes through the fully connected layer {layer.name}, "
                            f"which takes only inputs of the definition's size "
                            f"({'x'.join(map(str, _declared_input(model)[1:][::-1]))}); "
                            f"octave {w}x{h} is not", "choose a convolutional --end "
                            "(`deepdream-caffe layers` lists them)")
    except Unknown:
        pass  # a layer type not modelled here: Caffe checks it
    return sizes


def _input_for(side: int, octave_n: int, octave_scale: float) -> int:
    """The smallest image side whose smallest octave is at least ``side``."""
    n = side
    while octave_sizes(n, n, octave_n, octave_scale)[0][0] < side:
        n += 1
    return n


def param_shapes(model) -> dict:
    """{layer: [blob shapes]} the definition's parameter layers expect."""
    shapes = infer_shapes(model, *_declared_input(model)[1:])
    out = {}
    for layer in _layers(model):
        if layer.type == "Convolution":
            p = layer.convolution_param
            k = _first(p.kernel_size, 1)
            c = shapes[layer.bottom[0]][0]
            out[layer.name] = [(p.num_output, c // p.group, k, k)] + \
                ([(p.num_output,)] if p.bias_term else [])
        elif layer.type == "InnerProduct":
            p = layer.inner_product_param
            k = int(np.prod(shapes[layer.bottom[0]]))
            out[layer.name] = [(p.num_output, k)] + ([(p.num_output,)] if p.bias_term else [])
    return out


def check_weights(model, weights: Path) -> None:
    """Refuse a weights file that is not a caffemodel or does not fit ``model``."""
    from caffe.proto import caffe_pb2
    from google.protobuf.message import DecodeError

    weights = Path(weights)
    if weights.suffix in (".h5", ".hdf5"):
        return  # Caffe's HDF5 weights: left to Caffe
    fix = "download the weights again (`deepdream-caffe fetch`), or pass the right --weights"
    source = caffe_pb2.NetParameter()
    try:
        source.ParseFromString(weights.read_bytes())
    except DecodeError:
        raise DreamError(f"{weights} is not a Caffe weights file (corrupt or truncated)",
                         fix) from None
    stored = {layer.name: [_blob_shape(b) for b in layer.blobs] for layer in _layers(source)}
    if not any(stored.values()):
        raise DreamError(f"{weights} holds no weights", fix)
    try:
        expected = param_shapes(model)
    except Unknown:
        return
    for name, shapes in expected.items():
        if name not in stored or not stored[name]:
            raise DreamError(f"{weights} has no weights for layer {name}: it belongs to "
                             "another net", fix)
        got = [tuple(s) for s in stored[name]]
        if [_squeeze(g) for g in got] != [_squeeze(s) for s in shapes]:
            raise DreamError(f"{weights} does not fit the definition: layer {name} has "
                             f"weights of shape {got}, the definition needs {shapes}", fix)


def _blob_shape(blob):
    if len(blob.shape.dim):
        return tuple(blob.shape.dim)
    return (blob.num, blob.channels, blob.height, blob.width)  # the legacy 4-D form


def _squeeze(shape):
    """Caffe accepts legacy 4-D blobs for 1-D and 2-D parameters: compare without 1s."""
    return tuple(d for d in shape if d != 1)


PROCESS_BYTES = 200 * 2**20  # Python, numpy, scipy, Caffe and its libraries, loaded (measured)


def estimate_bytes(model, sizes, notebook_net: bool) -> int:
    """Memory a dream needs at its largest octave, from Caffe's own allocations: every blob's
    data and diff, the diffs of the Split branches Caffe adds, each convolution's im2col
    buffer, max-pooling's argmax and LRN's scale, the weights (and their gradients for the
    notebook's net), numpy's copies of the image (detail, rolls: about 12), the smaller
    octaves ``sizes[:-1]`` the dream keeps, and the process itself. Checked against a
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
                out_hw = int(np.prod(shapes[layer.top[0]][1:]))
                floats += shapes[layer.bottom[0]][0] * k * k * out_hw
        elif layer.type in ("Pooling", "LRN"):
            floats += top
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


def check_weights_size(model, weights: Path) -> None:
    """Refuse a weights file far larger than the whole definition's parameters could fill
    (float32 data and diff, plus ``WEIGHTS_SLACK``), or one too large to read into memory,
    from its size alone: before a byte of it is read."""
    size = weights.stat().st_size
    try:
        count = sum(int(np.prod(s)) for ps in param_shapes(model).values() for s in ps)
    except (Unknown, TooSmall, KeyError, IndexError):
        count = None
    fix = "pass the weights that belong to this definition"
    if count is not None and size > 8 * count + WEIGHTS_SLACK:
        raise DreamError(f"{weights} is {size / 2**20:.0f} MiB, far more than the "
                         f"{count * 4 / 2**20:.0f} MiB of parameters the definition holds", fix)
    free = available_bytes()
    if free is not None and 3 * size > free:  # the bytes, and protobuf's parsed copy
        raise DreamError(f"{weights} is {size / 2**30:.1f} GiB, too large to read with "
                         f"{free / 2**30:.1f} GiB of memory available", fix)


def available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
