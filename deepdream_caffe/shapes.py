"""Blob and parameter shapes of a Caffe net, computed as Caffe 1.0 computes them, without Caffe.

Caffe answers a definition it cannot build with a CHECK failure that ends the process. So every
layer type Caffe 1.0 ships is either modelled here, with the output-size formula and the
definition checks of its ``src/caffe/layers/*_layer.cpp`` (``LayerSetUp`` and ``Reshape``), or
listed in :data:`REFUSED` with the reason it is refused. Shapes are full Caffe shapes, batch
axis first; the net's ``data`` blob is fed one image (batch 1), as DeepDream feeds it.
"""

from __future__ import annotations

import math

import numpy as np

INT_MAX = 2**31 - 1  # Caffe counts blob elements in an int


class ShapeError(Exception):
    """Caffe would abort on this layer: ``layer`` names it, ``reason`` says why."""

    def __init__(self, layer: str, reason: str):
        super().__init__(f"layer {layer!r}: {reason}")
        self.layer, self.reason = layer, reason


class TooSmall(ShapeError):
    """The layer's output would be empty at this input size."""

    def __init__(self, layer: str):
        super().__init__(layer, "its output would be empty at this input size")


class TooLarge(ShapeError):
    """A blob would hold more values than Caffe's int counts."""

    def __init__(self, layer: str, blob: str, count: int):
        super().__init__(
            layer,
            f"blob {blob!r} would hold {count} values "
            f"({4 * count / 2**30:.1f} GiB), more than Caffe's limit of {INT_MAX}",
        )
        self.count = count


class Unknown(Exception):
    """The net holds a layer whose shapes are not modelled (an allowed Python layer)."""


# Types refused before Caffe sees them, with the reason a user reads.
_TRAINING = "is a training layer (it needs labels); pass the net's deploy definition"
_DATA = (
    "reads training data (a train/val definition); pass the net's deploy definition, "
    "whose input is an Input layer or `input:` fields"
)
_RECURRENT = "is a recurrent layer; DeepDream here runs on image (convolutional) nets only"
_NO_GRADIENT = "has no gradient for its input in Caffe, which DeepDream needs; not supported"
REFUSED = {
    **dict.fromkeys(
        ["Data", "DummyData", "HDF5Data", "ImageData", "MemoryData", "WindowData"], _DATA
    ),
    **dict.fromkeys(
        [
            "Accuracy",
            "ContrastiveLoss",
            "EuclideanLoss",
            "HingeLoss",
            "InfogainLoss",
            "MultinomialLogisticLoss",
            "SigmoidCrossEntropyLoss",
            "SoftmaxWithLoss",
        ],
        _TRAINING,
    ),
    **dict.fromkeys(["LSTM", "RNN", "LSTMUnit"], _RECURRENT),
    **dict.fromkeys(["ArgMax", "BatchReindex", "Embed", "Filter"], _NO_GRADIENT),
    "HDF5Output": "writes files; not supported",
    "Im2col": "is an internal layer; not supported",
    "SPP": "(spatial pyramid pooling) is not supported",
}
# Layers whose backward pass Caffe does not implement (it aborts when a dream reaches them).
NO_BACKWARD = {"Threshold"}


def _fail(layer, reason):
    raise ShapeError(layer.name, reason)


def _need(ok, layer, reason):
    if not ok:
        _fail(layer, reason)


def _axis(layer, axis, num_axes):
    """Caffe's CanonicalAxisIndex: -num_axes <= axis < num_axes, negative from the end."""
    _need(
        -num_axes <= axis < num_axes,
        layer,
        f"axis {axis} is out of range for a {num_axes}-axis blob",
    )
    return axis % num_axes


def _count(shape, start=0, end=None):
    return math.prod(shape[start:end])


def _cdiv(a, b):
    """C++ integer division (truncates toward zero), as Caffe's size formulas use it."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


# --- one function per layer family: (layer, bottom shapes, input) -> top shapes -----------
def _input(layer, bottom, feed):
    shapes = [tuple(s.dim) for s in layer.input_param.shape]
    n = len(layer.top)
    _need(len(shapes) in (1, n), layer, "input_param must give one shape, or one per top")
    tops = [shapes[0] if len(shapes) == 1 else shapes[i] for i in range(n)]
    for name, shape in zip(layer.top, tops, strict=False):
        _need(
            all(0 <= d <= INT_MAX for d in shape),
            layer,
            f"blob {name!r} has a negative or oversized dimension",
        )
    return [feed(name, shape) for name, shape in zip(layer.top, tops, strict=False)]


def _same(layer, bottom, feed):
    return [bottom[0]] * max(1, len(layer.top))


def _at_least_axes(n):
    def rule(layer, bottom, feed):
        _need(len(bottom[0]) >= n, layer, f"its input must have at least {n} axes")
        return _same(layer, bottom, feed)

    return rule


def _four_axes(layer, bottom):
    _need(
        len(bottom[0]) == 4,
        layer,
        f"its input must have 4 axes (num, channels, height, width), not {len(bottom[0])}",
    )


def _lrn(layer, bottom, feed):
    _need(layer.lrn_param.local_size % 2 == 1, layer, "local_size must be odd")
    _four_axes(layer, bottom)
    return _same(layer, bottom, feed)


def _exp_log(layer, bottom, feed):
    p = layer.exp_param if layer.type == "Exp" else layer.log_param
    base = np.float32(p.base)
    _need(base == -1 or base > 0, layer, "base must be -1 (e) or positive")
    with np.errstate(all="ignore"):
        log_base = np.float32(1) if base == -1 else np.log(base)
        finite = [log_base] + ([np.float32(1) / log_base] if layer.type == "Log" else [])
    _need(all(np.isfinite(v) for v in finite), layer, f"base {p.base} gives no finite log")
    return _same(layer, bottom, feed)


def _geometry(layer, p, n, name, default, positive):
    """kernel/stride/pad/dilation of a convolution: once, once per axis, or _h and _w."""
    h, w = f"{name}_h", f"{name}_w"
    values = list(getattr(p, name + ("_size" if name == "kernel" else ""), []))
    if name != "dilation" and (p.HasField(h) or p.HasField(w)):
        _need(n == 2, layer, f"{h} and {w} can only be used for 2-D convolution")
        _need(not values, layer, f"give either {name} or {h}/{w}, not both")
        values = [getattr(p, h), getattr(p, w)]
    elif not values:
        _need(name != "kernel", layer, "kernel_size is missing")
        values = [default] * n
    elif len(values) == 1:
        values = values * n
    _need(len(values) == n, layer, f"{name} must be given once or once per spatial axis")
    if positive:
        _need(all(v > 0 for v in values), layer, f"{name} must be positive")
    return values


def _conv(layer, bottom, feed):
    p = layer.convolution_param
    shape = bottom[0]
    axis = _axis(layer, p.axis, len(shape))
    n = len(shape) - axis - 1
    kernel = _geometry(layer, p, n, "kernel", 0, True)
    stride = _geometry(layer, p, n, "stride", 1, True)
    pad = _geometry(layer, p, n, "pad", 0, False)
    dilation = _geometry(layer, p, n, "dilation", 1, False)
    channels = shape[axis]
    _need(p.num_output > 0, layer, "num_output must be positive")
    _need(p.group > 0, layer, "group must be positive")
    _need(
        channels % p.group == 0,
        layer,
        f"its {channels} input channels are not a multiple of group {p.group}",
    )
    _need(p.num_output % p.group == 0, layer, "num_output must be a multiple of group")
    for other in bottom[1:]:
        _need(other == shape, layer, "all its inputs must have the same shape")
    out = []
    for size, k, s, pd, d in zip(shape[axis + 1 :], kernel, stride, pad, dilation, strict=False):
        extent = d * (k - 1) + 1
        if layer.type == "Deconvolution":
            out.append(s * (size - 1) + extent - 2 * pd)
        else:
            out.append(_cdiv(size + 2 * pd - extent, s) + 1)
    return [(*shape[:axis], p.num_output, *out)] * len(layer.top)


def _conv_params(layer, bottom):
    p = layer.convolution_param
    axis = _axis(layer, p.axis, len(bottom[0]))
    n = len(bottom[0]) - axis - 1
    kernel = tuple(_geometry(layer, p, n, "kernel", 0, True))
    channels = bottom[0][axis]
    if layer.type == "Deconvolution":
        weights = (channels, p.num_output // p.group, *kernel)
    else:
        weights = (p.num_output, channels // p.group, *kernel)
    return [weights] + ([(p.num_output,)] if p.bias_term else [])


def _pool_value(p, name, default):
    h, w = f"{name}_h", f"{name}_w"
    if p.HasField(h) or p.HasField(w):
        return getattr(p, h), getattr(p, w)
    value = getattr(p, name if name != "kernel" else "kernel_size", default)
    return value, value


def _pooling(layer, bottom, feed):
    p = layer.pooling_param
    has = p.HasField
    _four_axes(layer, bottom)
    if p.global_pooling:
        _need(
            not (has("kernel_size") or has("kernel_h") or has("kernel_w")),
            layer,
            "global_pooling takes no kernel size",
        )
    else:
        _need(
            has("kernel_size") != (has("kernel_h") and has("kernel_w")),
            layer,
            "give kernel_size, or kernel_h and kernel_w (both), not both",
        )
    for name in ("pad", "stride"):
        _need(
            (not has(name) and has(f"{name}_h") and has(f"{name}_w"))
            or (not has(f"{name}_h") and not has(f"{name}_w")),
            layer,
            f"give {name}, or {name}_h and {name}_w (both)",
        )
    n, c, h, w = bottom[0]
    kernel = (h, w) if p.global_pooling else _pool_value(p, "kernel", 0)
    pad, stride = _pool_value(p, "pad", 0), _pool_value(p, "stride", 1)
    _need(min(kernel) > 0, layer, "the kernel size must be positive")
    _need(min(stride) > 0, layer, "stride must be positive")
    if p.global_pooling:
        _need(
            pad == (0, 0) and stride == (1, 1),
            layer,
            "global_pooling takes only pad 0 and stride 1",
        )
    if pad != (0, 0):
        _need(p.pool in (p.MAX, p.AVE), layer, "padding works only for MAX and AVE pooling")
        _need(pad[0] < kernel[0] and pad[1] < kernel[1], layer, "pad must be below the kernel")
    _need(len(layer.top) == 1 or p.pool == p.MAX, layer, "only MAX pooling has a mask top")
    out = [
        _pooled(size, k, s, pd, p.round_mode == p.FLOOR)
        for size, k, s, pd in zip((h, w), kernel, stride, pad, strict=False)
    ]
    return [(n, c, *out)] * len(layer.top)


def _pooled(size, kernel, stride, pad, floor=False):
    """Caffe's pooling output size: float division, rounded (up by default), minus a last
    window that would start in the padding."""
    ratio = np.float32(size + 2 * pad - kernel) / np.float32(stride)
    out = int(np.floor(ratio) if floor else np.ceil(ratio)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _inner_product(layer, bottom, feed):
    p = layer.inner_product_param
    axis = _axis(layer, p.axis, len(bottom[0]))
    _need(p.num_output > 0, layer, "num_output must be positive")
    return [(*bottom[0][:axis], p.num_output)]


def _inner_product_params(layer, bottom):
    p = layer.inner_product_param
    k = _count(bottom[0], _axis(layer, p.axis, len(bottom[0])))
    weights = (k, p.num_output) if p.transpose else (p.num_output, k)
    return [weights] + ([(p.num_output,)] if p.bias_term else [])


def _legacy_axis(layer, p, legacy, num_axes):
    _need(
        not (p.HasField("axis") and p.HasField(legacy)),
        layer,
        f"give either axis or {legacy}, not both",
    )
    if p.HasField(legacy):
        axis = getattr(p, legacy)
        _need(axis < num_axes, layer, f"{legacy} {axis} is out of range")
        return axis
    return _axis(layer, p.axis, num_axes)


def _concat(layer, bottom, feed):
    first = bottom[0]
    axis = _legacy_axis(layer, layer.concat_param, "concat_dim", len(first))
    for other in bottom[1:]:
        same = len(other) == len(first) and all(
            a == b for i, (a, b) in enumerate(zip(first, other, strict=True)) if i != axis
        )
        _need(same, layer, f"its inputs {first} and {other} differ outside the concat axis")
    top = list(first)
    top[axis] = sum(b[axis] for b in bottom)
    return [tuple(top)]


def _eltwise(layer, bottom, feed):
    p = layer.eltwise_param
    _need(len(p.coeff) in (0, len(bottom)), layer, "give one coeff per input, or none")
    _need(not (p.operation == p.PROD and len(p.coeff)), layer, "coeff works only with SUM")
    _need(
        all(b == bottom[0] for b in bottom),
        layer,
        f"its inputs differ in shape: {', '.join(map(str, bottom))}",
    )
    return [bottom[0]]


def _flatten(layer, bottom, feed):
    shape = bottom[0]
    start = _axis(layer, layer.flatten_param.axis, len(shape))
    end = _axis(layer, layer.flatten_param.end_axis, len(shape))
    _need(end + 1 >= start, layer, "end_axis comes before axis")
    return [(*shape[:start], _count(shape, start, end + 1), *shape[end + 1 :])]


def _reshape(layer, bottom, feed):
    p = layer.reshape_param
    shape, dims = bottom[0], list(p.shape.dim)
    _need(dims.count(-1) <= 1, layer, "the new shape may hold at most one -1")
    _need(all(d >= -1 for d in dims), layer, "the new shape holds a dimension below -1")
    start = p.axis if p.axis >= 0 else len(shape) + p.axis + 1
    _need(0 <= start <= len(shape), layer, f"axis {p.axis} is out of range")
    _need(p.num_axes >= -1, layer, "num_axes must be -1 or more")
    end = len(shape) if p.num_axes == -1 else start + p.num_axes
    _need(end <= len(shape), layer, "axis + num_axes is out of range")
    top = [*shape[:start], *dims, *shape[end:]]
    for i, d in enumerate(dims):
        if d == 0:
            _need(start + i < len(shape), layer, "a 0 in the new shape has no axis to copy")
            top[start + i] = shape[start + i]
    if -1 in dims:
        known = math.prod(d for i, d in enumerate(top) if i != start + dims.index(-1))
        _need(
            known > 0 and _count(shape) % known == 0,
            layer,
            f"{_count(shape)} values cannot be reshaped to {dims}",
        )
        top[start + dims.index(-1)] = _count(shape) // known
    _need(
        _count(top) == _count(shape),
        layer,
        f"{shape} has {_count(shape)} values, the new shape {tuple(top)} another count",
    )
    return [tuple(top)]


def _slice(layer, bottom, feed):
    p, shape = layer.slice_param, bottom[0]
    axis = _legacy_axis(layer, p, "slice_dim", len(shape))
    size, n = shape[axis], len(layer.top)
    if len(p.slice_point):
        points = [0, *p.slice_point, size]
        _need(len(p.slice_point) == n - 1, layer, "give one slice_point fewer than tops")
        _need(
            all(a < b for a, b in zip(points, points[1:], strict=False)),
            layer,
            f"slice points must rise strictly within 0..{size}",
        )
        sizes = [b - a for a, b in zip(points, points[1:], strict=False)]
    else:
        _need(size % n == 0, layer, f"{n} tops do not divide axis {axis} of size {size}")
        sizes = [size // n] * n
    return [(*shape[:axis], s, *shape[axis + 1 :]) for s in sizes]


def _crop(layer, bottom, feed):
    p = layer.crop_param
    big, ref = bottom
    _need(len(big) == len(ref), layer, "both inputs must have the same number of axes")
    start = _axis(layer, p.axis, len(big))
    offsets = list(p.offset)
    _need(
        len(offsets) <= 1 or start + len(offsets) == len(big),
        layer,
        "give one offset, or one per axis from axis on",
    )
    top = list(big)
    for i in range(start, len(big)):
        offset = offsets[0] if len(offsets) == 1 else offsets[i - start] if offsets else 0
        _need(
            big[i] - offset >= ref[i],
            layer,
            f"the crop of axis {i} (size {ref[i]}, offset {offset}) does not fit in {big[i]}",
        )
        top[i] = ref[i]
    return [tuple(top)]


def _scale_shape(layer, p, bottom):
    """The shape of the scale (or bias) blob, learned or given as the second input."""
    shape = bottom[0]
    if len(bottom) == 2:
        other = bottom[1]
        axis = 0 if not other else _axis(layer, p.axis, len(shape))
        _need(
            len(shape) >= axis + len(other) and shape[axis : axis + len(other)] == other,
            layer,
            f"its second input {other} does not match {shape} from axis {axis}",
        )
        return other
    axis = _axis(layer, p.axis, len(shape))
    _need(p.num_axes >= -1, layer, "num_axes must be -1 or more")
    _need(
        p.num_axes == -1 or len(shape) >= axis + p.num_axes,
        layer,
        "axis + num_axes goes past the input's axes",
    )
    return shape[axis:] if p.num_axes == -1 else shape[axis : axis + p.num_axes]


def _scale_bias(layer, bottom, feed):
    p = layer.scale_param if layer.type == "Scale" else layer.bias_param
    _scale_shape(layer, p, bottom)
    return [bottom[0]]


def _scale_params(layer, bottom):
    if layer.type == "Bias":
        return [] if len(bottom) == 2 else [_scale_shape(layer, layer.bias_param, bottom)]
    shape = _scale_shape(layer, layer.scale_param, bottom)
    bias = [shape] if layer.scale_param.bias_term else []
    return bias if len(bottom) == 2 else [shape] + bias


def _tile(layer, bottom, feed):
    p, shape = layer.tile_param, list(bottom[0])
    axis = _axis(layer, p.axis, len(shape))
    _need(p.HasField("tiles") and p.tiles > 0, layer, "tiles must be given and positive")
    shape[axis] *= p.tiles
    return [tuple(shape)]


def _reduction(layer, bottom, feed):
    axis = _axis(layer, layer.reduction_param.axis, len(bottom[0]))
    return [bottom[0][:axis]]


def _parameter(layer, bottom, feed):
    return [tuple(layer.parameter_param.shape.dim)]


def _batch_norm(layer, bottom, feed):
    _need(len(bottom[0]) >= 2, layer, "its input must have at least 2 axes")
    return [bottom[0]]


def _softmax(layer, bottom, feed):
    _axis(layer, layer.softmax_param.axis, len(bottom[0]))
    return [bottom[0]]


def _silence(layer, bottom, feed):
    return []


SHAPES = {
    "Input": _input,
    "Convolution": _conv,
    "Deconvolution": _conv,
    "Pooling": _pooling,
    "InnerProduct": _inner_product,
    "Concat": _concat,
    "Eltwise": _eltwise,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Slice": _slice,
    "Crop": _crop,
    "Scale": _scale_bias,
    "Bias": _scale_bias,
    "Tile": _tile,
    "Reduction": _reduction,
    "Parameter": _parameter,
    "Silence": _silence,
    "LRN": _lrn,
    "Exp": _exp_log,
    "Log": _exp_log,
    "BatchNorm": _batch_norm,
    "PReLU": _at_least_axes(2),
    **dict.fromkeys(
        [
            "AbsVal",
            "BNLL",
            "Clip",
            "Dropout",
            "ELU",
            "Power",
            "ReLU",
            "Sigmoid",
            "Swish",
            "TanH",
            "Threshold",
            "MVN",
            "Softmax",
            "Split",
        ],
        _same,
    ),
}
SHAPES["Softmax"] = _softmax

# (fewest, most) inputs and outputs, as each layer's header declares them; None: any number.
NEURON = ((1, 1), (1, 1))
BLOB_COUNTS = {
    "Input": ((0, 0), (1, None)),
    "Convolution": ((1, None), (1, None)),
    "Deconvolution": ((1, None), (1, None)),
    "Pooling": ((1, 1), (1, 2)),
    "InnerProduct": ((1, 1), (1, 1)),
    "Concat": ((1, None), (1, 1)),
    "Eltwise": ((2, None), (1, 1)),
    "Flatten": ((1, 1), (1, 1)),
    "Reshape": ((1, 1), (1, 1)),
    "Slice": ((1, 1), (1, None)),
    "Crop": ((2, 2), (1, 1)),
    "Scale": ((1, 2), (1, 1)),
    "Bias": ((1, 2), (1, 1)),
    "Tile": ((1, 1), (1, 1)),
    "Reduction": ((1, 1), (1, 1)),
    "Parameter": ((0, 0), (1, 1)),
    "Silence": ((1, None), (0, 0)),
    "Split": ((1, 1), (1, None)),
    "LRN": ((1, 1), (1, 1)),
    "MVN": ((1, 1), (1, 1)),
    "Softmax": ((1, 1), (1, 1)),
    "BatchNorm": ((1, 1), (1, 1)),
}
BLOB_COUNTS.update({kind: NEURON for kind in SHAPES if kind not in BLOB_COUNTS})
# Convolutions make one output per input.
SAME_COUNT = {"Convolution", "Deconvolution"}
# Layers that may not write their output onto their input: Caffe's rule, and Pooling, which
# Caffe lets do it but then reads its own fill (-FLT_MAX, or zeros) instead of the input.
NOT_IN_PLACE = {"AbsVal", "Flatten", "Reshape", "Split", "Pooling"}

PARAMS = {
    "Convolution": _conv_params,
    "Deconvolution": _conv_params,
    "InnerProduct": _inner_product_params,
    "Scale": _scale_params,
    "Bias": _scale_params,
    "BatchNorm": lambda layer, bottom: [(_channels(bottom),), (_channels(bottom),), (1,)],
    "PReLU": lambda layer, bottom: [() if layer.prelu_param.channel_shared else (bottom[0][1],)],
    "Parameter": lambda layer, bottom: [tuple(layer.parameter_param.shape.dim)],
}
# The filler fields of each parameter layer, in the order of its parameter blobs.
FILLERS = {
    "Convolution": ("convolution_param", ["weight_filler", "bias_filler"]),
    "Deconvolution": ("convolution_param", ["weight_filler", "bias_filler"]),
    "InnerProduct": ("inner_product_param", ["weight_filler", "bias_filler"]),
    "PReLU": ("prelu_param", ["filler"]),
    "Bias": ("bias_param", ["filler"]),
}
FILLER_TYPES = {
    "constant",
    "gaussian",
    "positive_unitball",
    "uniform",
    "xavier",
    "msra",
    "bilinear",
}


def _channels(bottom):
    return bottom[0][1] if len(bottom[0]) > 1 else 1


# --- the net ---------------------------------------------------------------------------
def infer(
    model, feed, partial: bool = False, skip_empty: bool = False, allow_empty: bool = False
) -> dict:
    """{blob: shape} of ``model`` (a V2 ``NetParameter`` that passed the structure checks).
    ``feed(name, declared)`` gives each Input top's shape. With ``partial``, layers whose
    shapes are unknown (allowed Python layers, and what follows them) are skipped; with
    ``skip_empty``, so are layers whose output would be empty (and what follows them); with
    ``allow_empty``, empty outputs are kept, as Caffe keeps them (a negative size is not)."""
    shapes = {}
    for layer in model.layer:
        rule = SHAPES.get(layer.type)
        if rule is None or any(b not in shapes for b in layer.bottom):
            if partial:
                continue
            raise Unknown(layer.type)
        bottom = [shapes[b] for b in layer.bottom]
        tops = rule(layer, bottom, feed)
        if layer.type != "Input" and any(
            d < (0 if allow_empty else 1) for shape in tops for d in shape
        ):
            if skip_empty:
                partial = True  # what follows has unknown inputs
                continue
            raise TooSmall(layer.name)
        for name, shape in zip(layer.top, tops, strict=False):
            if _count(shape) > INT_MAX:
                raise TooLarge(layer.name, name, _count(shape))
            shapes[name] = tuple(shape)
    return shapes


def declared_input(model) -> tuple:
    """The declared shape of the ``data`` blob, (N, C, H, W)."""
    for layer in model.layer:
        if layer.type == "Input" and "data" in layer.top:
            shapes = layer.input_param.shape
            index = list(layer.top).index("data") if len(shapes) > 1 else 0
            return tuple(shapes[index].dim) if len(shapes) else ()
    return ()


def infer_shapes(
    model,
    height: int,
    width: int,
    batch: int = 1,
    partial: bool = False,
    skip_empty: bool = False,
    allow_empty: bool = False,
):
    """Blob shapes for ``batch`` images of ``height`` x ``width`` fed to ``data``."""

    def feed(name, declared):
        if name == "data":
            return (batch, declared[1], height, width)
        return declared

    return infer(model, feed, partial, skip_empty, allow_empty)


def param_shapes(model, shapes: dict | None = None) -> dict:
    """{layer: [parameter blob shapes]} as Caffe allocates them, at the declared input size
    (layers after an allowed Python layer, whose shapes are unknown, are left out)."""
    if shapes is None:
        shapes = infer(model, lambda name, declared: declared, partial=True)
    out = {}
    for layer in model.layer:
        if layer.type in PARAMS and all(b in shapes for b in layer.bottom):
            out[layer.name] = [
                tuple(s) for s in PARAMS[layer.type](layer, [shapes[b] for b in layer.bottom])
            ]
    return out


def check_params(model, shapes: dict) -> None:
    """Param specs, shared parameters and fillers, as Caffe checks them when it builds."""
    params = param_shapes(model, shapes)
    owners, mults = {}, {}
    for layer in model.layer:
        blobs = params.get(layer.name, [])
        _need(
            len(layer.param) <= len(blobs),
            layer,
            f"it has {len(blobs)} parameter blobs but {len(layer.param)} param specs",
        )
        if layer.type == "BatchNorm":  # its statistics are not learned: Caffe checks lr_mult 0
            _need(
                all(spec.lr_mult == 0 for spec in layer.param),
                layer,
                "a BatchNorm param spec needs lr_mult: 0 (its statistics are not learned)",
            )
        for spec, shape in zip(layer.param, blobs, strict=False):
            if not spec.name:
                continue
            _check_shared_mults(layer, spec, mults.setdefault(spec.name, {}))
            first = owners.setdefault(spec.name, (layer.name, shape))
            same = (
                first[1] == shape
                if spec.share_mode == spec.STRICT
                else _count(first[1]) == _count(shape)
            )
            _need(
                same,
                layer,
                f"it shares param {spec.name!r} with layer {first[0]!r}, "
                f"but the shapes differ ({shape} and {first[1]})",
            )
        _check_fillers(layer, blobs)


def _check_shared_mults(layer, spec, seen: dict):
    """A shared param's lr_mult and decay_mult: the first given value binds the later ones."""
    for field in ("lr_mult", "decay_mult"):
        if not spec.HasField(field):
            continue
        value = seen.setdefault(field, getattr(spec, field))
        _need(
            value == getattr(spec, field),
            layer,
            f"shared param {spec.name!r} has {field} {getattr(spec, field):g} here "
            f"but {value:g} where it was first given",
        )


def _check_fillers(layer, blobs):
    field, names = FILLERS.get(layer.type, (None, []))
    if layer.type == "Scale":
        field, names = "scale_param", ["filler", "bias_filler"]
        if len(layer.bottom) == 2:
            names = names[1:]
    for name, shape in zip(names, blobs, strict=False):
        filler = getattr(getattr(layer, field), name)
        _need(_count(shape) > 0, layer, f"its {name} would fill an empty parameter blob")
        if not filler.ListFields():
            continue
        _need(
            filler.type in FILLER_TYPES,
            layer,
            f"{name} has the unknown type "
            f"{filler.type!r} (Caffe knows {', '.join(sorted(FILLER_TYPES))})",
        )
        _need(
            filler.sparse == -1 or (filler.type == "gaussian" and filler.sparse >= -1),
            layer,
            f"{name}: sparse works only with gaussian",
        )
        if filler.type == "gaussian":
            _need(filler.std > 0, layer, f"{name}: std must be positive")
        if filler.type == "uniform":
            _need(filler.min <= filler.max, layer, f"{name}: min must not exceed max")
        if filler.type == "bilinear":
            _need(
                len(shape) == 4 and shape[2] == shape[3],
                layer,
                f"{name}: bilinear fills only square 4-D kernels",
            )
