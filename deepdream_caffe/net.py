"""Loading a Caffe net for dreaming, the way dream.ipynb cell 3 did, minus ``tmp.prototxt``.

The definition is parsed and ``force_backward`` is set: that is the notebook's net
(``--notebook-net``). By default the net is then pruned to the layers the chosen end layer
needs (which drops the auxiliary heads of Places205) and rewritten to compute the data gradient
only, checked against the notebook's net before use (``deepdream_caffe/fastnet.py``; no number
changes, see docs/deviations.md). The net is a ``caffe.Classifier`` with the notebook's mean and
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


def notebook_reach(model, end: str):
    """The layers the notebook's ``net.forward(end=end)`` runs: every layer up to ``end`` in
    the definition's order, whether ``end`` needs it or not (Places205's aux heads included).
    """
    layers = list(_layers(model))
    index = [layer.name for layer in layers].index(end)
    reach = type(model)()
    reach.CopyFrom(model)
    field = _layers(reach)
    del field[:]
    field.extend(layers[:index + 1])
    return reach


def load_net(model_def: Path, weights: Path, end: str | None, mean, channel_swap=(2, 1, 0),
             gpu: int | None = None, prune_net: bool = True, notebook_net: bool = False):
    """Return a ``caffe.Classifier`` ready for dreaming at ``end``.

    ``mean`` is B,G,R; it is subtracted from the channel of the same colour, wherever
    ``channel_swap`` puts it. ``notebook_net=True`` (or ``prune_net=False``, or no ``end``)
    loads the notebook's net exactly: the whole definition with force_backward. By default
    the net is pruned to ``end`` and made to compute the data gradient only, after a check
    that it gives the bits of the notebook's net up to ``end`` (:mod:`deepdream_caffe.fastnet`).
    ``net.dream_setup`` says which set-up was used.
    """
    from .checks import check_weights
    from .fastnet import NOTEBOOK_SETUP, load_fast

    caffe = import_caffe()
    model = read_definition(model_def)
    weights = Path(weights)
    if not weights.is_file():
        raise DreamError(f"weights file {weights} does not exist", "check the --weights path")
    model.force_backward = True
    if end is not None:
        check_end(model, end)
    whole = end is None or notebook_net or not prune_net
    built = model if whole else notebook_reach(model, end)  # the most this set-up builds
    check_weights(built, weights)  # Caffe aborts on weights that do not fit
    select_device(caffe, gpu)
    net_mean = mean_in_net_order(mean, channel_swap)

    def make(definition):
        # The notebook wrote tmp.prototxt into the working folder; a private temporary file.
        fd, tmp = tempfile.mkstemp(suffix=".prototxt", prefix="deepdream-")
        try:
            with os.fdopen(fd, "w") as f:
                f.write(str(definition))
            return caffe.Classifier(tmp, str(weights), mean=net_mean,
                                    channel_swap=tuple(channel_swap))
        finally:
            os.unlink(tmp)

    if whole:
        net = make(model)
        net.dream_setup = NOTEBOOK_SETUP
        return net
    return load_fast(built, prune(model, end), end, make)


def mean_in_net_order(mean_bgr, channel_swap):
    """The B,G,R mean reordered as the net's input channels (unchanged for 2,1,0)."""
    rgb = np.float32(mean_bgr)[::-1]
    return rgb[list(channel_swap)]
