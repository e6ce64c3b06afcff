"""Loading a Caffe net for dreaming, the way dream.ipynb cell 3 did, minus ``tmp.prototxt``.

The definition is parsed, ``force_backward`` is set, and the net is pruned to the layers the
chosen end layer needs (which drops the auxiliary heads of Places205; pruning changes no
number, see docs/deviations.md). The net is a ``caffe.Classifier`` with the notebook's mean and
channel swap, so ``net.transformer.mean['data']`` is exactly what the notebook's preprocess used.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .build import SETUP_HINT
from .errors import DreamError


def import_caffe(verbose: bool = False):
    """Import pycaffe, quiet unless ``verbose``, with a clear error when it is missing."""
    # glog reads this once, when libcaffe loads: 2 keeps only errors.
    os.environ.setdefault("GLOG_minloglevel", "0" if verbose else "2")
    try:
        import caffe
    except ImportError as e:
        raise DreamError(f"pycaffe cannot be imported ({e})", SETUP_HINT) from e
    return caffe


def read_definition(path: Path):
    """Parse a .prototxt into a ``NetParameter``, with errors that name the file."""
    caffe = import_caffe()
    from google.protobuf import text_format

    path = Path(path)
    if not path.is_file():
        raise DreamError(f"model definition {path} does not exist", "check the --model-def path")
    model = caffe.io.caffe_pb2.NetParameter()
    try:
        text_format.Merge(path.read_text(), model)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise DreamError(f"{path} is not a valid Caffe prototxt ({e})",
                         "fix the definition or pass the right --model-def") from e
    check_structure(caffe, model, path)
    return model


def check_structure(caffe, model, path) -> None:
    """What Caffe would abort on when it builds the net: unknown types, missing inputs."""
    fix = "fix the definition or pass the right --model-def"
    layers = list(_layers(model))
    if not layers:
        raise DreamError(f"{path} defines no layers", fix)
    if not len(model.layer):
        return  # the V1 format: Caffe upgrades it, and checks it itself
    known = set(caffe.layer_type_list())
    made = set(model.input)
    for layer in layers:
        if layer.type not in known:
            raise DreamError(f"{path}: layer {layer.name!r} has the unknown type "
                             f"{layer.type!r}", fix)
        for bottom in layer.bottom:
            if bottom not in made:
                raise DreamError(f"{path}: layer {layer.name!r} reads {bottom!r}, which no "
                                 "earlier layer makes", fix)
        made.update(layer.top)
    if "data" not in made:
        raise DreamError(f"{path} has no blob named 'data' (the notebook's input)", fix)


def _layers(model):
    """The layer list of a NetParameter, in the current or the V1 (``layers``) format."""
    return model.layer if len(model.layer) else model.layers


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    pre_relu: bool  # a later in-place layer (ReLU) changes this blob after the end layer


def dream_layers(model) -> list[LayerInfo]:
    """Layers usable as ``end``: layers whose output blob has the layer's name."""
    layers = list(_layers(model))
    out = []
    for i, layer in enumerate(layers):
        if layer.name not in layer.top or layer.name in layer.bottom or not layer.bottom:
            continue  # in-place layers, inputs, and layers with differently named outputs
        pre_relu = any(layer.name in later.bottom and layer.name in later.top
                       for later in layers[i + 1:])
        out.append(LayerInfo(layer.name, str(layer.type), pre_relu))
    return out


def check_end(model, end: str) -> None:
    """Refuse an ``end`` that is not a dreamable layer, naming the closest valid ones."""
    names = [info.name for info in dream_layers(model)]
    if end not in names:
        close = difflib.get_close_matches(end, names, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else "no similar name"
        raise DreamError(f"unknown layer {end!r} ({hint})",
                         "`deepdream-caffe layers` lists the valid --end names")


def prune(model, end: str):
    """A copy of ``model`` holding only the layers that ``end``'s output depends on."""
    check_end(model, end)
    layers = list(_layers(model))
    index = [layer.name for layer in layers].index(end)
    keep, needed = {index}, set(layers[index].bottom)
    for i in range(index - 1, -1, -1):
        tops = set(layers[i].top)
        if tops & needed:  # the latest writer of a needed blob (in-place layers included)
            keep.add(i)
            needed = (needed - tops) | set(layers[i].bottom)
    pruned = type(model)()
    pruned.CopyFrom(model)
    field = _layers(pruned)
    del field[:]
    field.extend(layers[i] for i in sorted(keep))
    return pruned


# Layers whose parameter blobs are (weights, bias when bias_term): the ones GoogLeNet-style
# nets hold. A net with any other parameter layer keeps the notebook's set-up.
WEIGHT_BIAS_LAYERS = {"Convolution": "convolution_param", "InnerProduct": "inner_product_param"}
PARAMETER_FREE_LAYERS = {"Input", "ReLU", "Pooling", "LRN", "Concat", "Dropout", "Softmax",
                         "Split", "Eltwise", "Flatten", "Reshape", "Sigmoid", "TanH"}


def data_gradient_only(model, end: str):
    """The pruned ``model`` rewritten so Caffe computes the data gradient and nothing else.

    ``force_backward: true`` (the notebook's way to get a data gradient) also makes Caffe
    compute every weight gradient, which dreaming throws away. Instead: no force_backward;
    ``lr_mult: 0`` on every weight and bias, except the biases of the layers reading the input,
    whose (cheap) gradient makes Caffe run their backward pass, with ``propagate_down`` asking
    for the input's diff; and ``loss_weight: 1`` on the end layer, so that Caffe counts every
    layer as contributing to a loss. Each layer's bottom diff is computed by the same code from
    the same numbers as before, so the result is bit-identical (tests/test_fast_net.py).

    Returns None when the net holds layers this rewrite does not know, or ``end`` is not its
    last layer; the caller then keeps the notebook's net.
    """
    layers = list(_layers(model))
    if not len(model.layer) or layers[-1].name != end:
        return None
    inputs = {top for layer in layers if layer.type == "Input" for top in layer.top}
    inputs |= set(model.input)
    fast = type(model)()
    fast.CopyFrom(model)
    fast.force_backward = False
    for layer in fast.layer:
        if layer.type in PARAMETER_FREE_LAYERS:
            continue
        if layer.type not in WEIGHT_BIAS_LAYERS:
            return None
        has_bias = getattr(layer, WEIGHT_BIAS_LAYERS[layer.type]).bias_term
        reads_input = bool(inputs & set(layer.bottom))
        if reads_input and not has_bias:
            return None
        while len(layer.param) < 1 + has_bias:
            layer.param.add()
        for spec in layer.param:
            spec.lr_mult = 0
        if reads_input:
            layer.param[1].lr_mult = 1  # the bias gradient that switches backward on
            del layer.propagate_down[:]
            layer.propagate_down.extend([True] * len(layer.bottom))
    last = fast.layer[-1]
    del last.loss_weight[:]
    last.loss_weight.extend([1.0] * len(last.top))
    return fast


def dream_model(model_def: Path, end: str):
    """The definition as a dream at ``end`` runs it: parsed, ``end`` checked, pruned."""
    model = read_definition(model_def)
    return prune(model, end)


def select_device(caffe, gpu: int | None) -> None:
    """CPU, or GPU ``gpu`` after checking that this Caffe and this machine have one."""
    if gpu is None:
        caffe.set_mode_cpu()
        return
    from .build import build_record

    if build_record().get("variant") != "cuda":
        raise DreamError("--gpu needs the CUDA build of Caffe; this one is CPU-only",
                         "leave out --gpu, or build it with `make setup CUDA=1`")
    count = cuda_device_count()
    if gpu >= count:
        raise DreamError(f"--gpu {gpu}: this machine has {count} CUDA device(s)",
                         "leave out --gpu, or choose one below the count")
    caffe.set_device(gpu)
    caffe.set_mode_gpu()


def cuda_device_count() -> int:
    """CUDA devices the driver sees (0 when there is no driver or runtime)."""
    import ctypes

    for name in ("libcudart.so", "libcudart.so.13", "libcudart.so.12"):
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        count = ctypes.c_int(0)
        return count.value if lib.cudaGetDeviceCount(ctypes.byref(count)) == 0 else 0
    return 0


def load_net(model_def: Path, weights: Path, end: str | None, mean, channel_swap=(2, 1, 0),
             gpu: int | None = None, prune_net: bool = True, notebook_net: bool = False):
    """Return a ``caffe.Classifier`` ready for dreaming at ``end``.

    By default the net is pruned to ``end`` and rewritten by :func:`data_gradient_only` (the
    same bits, faster). ``notebook_net=True`` loads it as the notebook did (force_backward,
    every weight gradient computed); ``prune_net=False`` keeps the whole definition.
    ``net.dream_setup`` says which set-up was used.
    """
    caffe = import_caffe()
    model = read_definition(model_def)
    weights = Path(weights)
    if not weights.is_file():
        raise DreamError(f"weights file {weights} does not exist", "check the --weights path")
    model.force_backward = True
    setup = "notebook (force_backward)"
    if end is not None:
        check_end(model, end)
        if prune_net:
            model = prune(model, end)
            setup += f", pruned to {end}"
            fast = None if notebook_net else data_gradient_only(model, end)
            if fast is not None:
                model, setup = fast, f"data gradient only, pruned to {end}"
    from .checks import check_weights

    check_weights(model, weights)  # Caffe aborts on weights that do not fit
    select_device(caffe, gpu)
    # The notebook wrote tmp.prototxt into the working folder; a private temporary file here.
    fd, tmp = tempfile.mkstemp(suffix=".prototxt", prefix="deepdream-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(str(model))
        net = caffe.Classifier(tmp, str(weights), mean=np.float32(mean),
                               channel_swap=tuple(channel_swap))
        net.dream_setup = setup
        return net
    finally:
        os.unlink(tmp)
