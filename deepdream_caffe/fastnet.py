"""The default net set-up: the notebook's net, rewritten so Caffe computes the data gradient only.

The notebook sets ``force_backward: true`` to get the gradient of the input image; it also
makes Caffe compute every weight gradient, which dreaming throws away. Here the net pruned to
the end layer is rewritten so that Caffe's own rule picks the layers that need a backward pass
(a layer needs one when one of its inputs needs a gradient or one of its parameters is learned,
and its output contributes to a loss), and that rule then picks exactly the layers on a path
from ``data`` to the end, whatever their types:

- every parameter of the net gets ``lr_mult: 0``: no weight gradient anywhere;
- one layer is added right after the input: a Scale by exactly 1, in place on ``data``, whose
  scale is learned (``lr_mult: 1``). A float times 1 is the same float, so it changes no number,
  but it makes ``data`` a blob that needs a gradient, and with it every layer that reads
  ``data`` or anything computed from it (Pooling, Eltwise, Concat, in-place layers, two
  readers, ...). Its own backward pass computes only its scale's gradient (one dot product);
  it leaves ``data``'s diff as the layers after it wrote it;
- the end layer's output gets ``loss_weight: 1``, so that Caffe counts the layers before it as
  contributing to a loss (the objective overwrites that diff before each backward pass);
- every ``propagate_down`` is removed, so each bottom gradient follows from the rule above.

Each bottom diff on those paths is then computed by the same code from the same numbers as in
the notebook's net. A rule is not a proof, so :func:`load_fast` also checks every net before
use: one forward and backward pass at a small size in it and in the notebook's net (as far as
the notebook's calls run it: every layer up to the end; its parameters copied from the fast
net, so the weights are read once), compared bit for bit. If anything
differs, that notebook net is used and ``net.dream_setup`` says so (it goes into the sidecar).
"""

from __future__ import annotations

import numpy as np

from . import checks, shapes

NOTEBOOK_SETUP = "notebook (force_backward, unpruned)"
NOTEBOOK_UP_TO = "notebook (force_backward), every layer up to"
SWITCH = "deepdream_caffe/data_gradient"  # the added layer's name
CHECK_SIDE = 16  # the smallest side the check runs at


def load_fast(reach, pruned, end: str, make, size=None):
    """The net for dreaming at ``end``: the rewritten ``pruned`` net when it checks out.

    ``reach`` is the notebook's net as far as its calls run it: force_backward, every layer up
    to ``end`` in the definition's order (the layers after ``end`` never run in the notebook,
    and building them could fail where they no longer fit). ``pruned`` is the same pruned to
    ``end``; ``make(definition)`` loads a definition with the weights, ``make(definition,
    False)`` builds it without reading them. The notebook's net of the check gets its
    parameters from the fast net, copied float for float (the same numbers Caffe read), so
    the weights are read once. ``size``, (H, W): the largest image the dream gives the net,
    which the fast net is built for (:func:`built_at`); the check's net is built for the
    check's size.
    """
    declared = shapes.declared_input(reach)
    check = check_size(reach, declared[2:])
    notebook = make(built_at(reach, check), False)
    fast_model = data_gradient_only(pruned, end, param_counts(notebook))
    if fast_model is None:
        notebook = make(reach)
        notebook.dream_setup = (
            f"{NOTEBOOK_UP_TO} {end}: the data-gradient-only rewrite "
            "needs a definition in the current (non-V1) format"
        )
        return notebook
    if size is not None:
        fast_model = built_at(fast_model, size, reach)
    fast = make(fast_model)
    copy_params(fast, notebook)
    built = fast.blobs["data"].data.shape
    where = f"a {check[1]}x{check[0]} check"
    if same_bits(one_pass(fast, end, check), one_pass(notebook, end, check)):
        fast.blobs["data"].reshape(*built)  # the input as the fresh net has it
        fast.dream_setup = (
            f"data gradient only, pruned to {end}; bit-identical to the "
            f"{NOTEBOOK_UP_TO} {end} at {where}"
        )
        return fast
    del notebook, fast
    notebook = make(reach)  # a fresh one, with the weights: the check left its diffs behind
    notebook.dream_setup = (
        f"{NOTEBOOK_UP_TO} {end}: the data-gradient-only net differed "
        f"from it at {where}, so this one is used"
    )
    return notebook


def built_at(model, size, sizes_from=None):
    """A copy of ``model`` with its ``data`` input declared as one image of ``size`` (H, W).

    A net's blobs are made for the input it is built with and kept while it shrinks, each
    zeroed when first used: GoogLeNet's deploy.prototxt declares 10 x 3 x 224 x 224, 3.4
    times the blobs a 512x288 dream needs. The numbers a pass computes depend only on the
    shapes it runs at, never on the shape the net was built with. ``model`` itself where a
    layer of ``sizes_from`` (default ``model``) is not modelled exactly (an InnerProduct's
    weights fit its declared input only), or where ``data`` is not declared by an Input
    layer with a shape of its own.
    """
    if not all(modelled_exactly(layer) for layer in (sizes_from or model).layer):
        return model
    sized = type(model)()
    sized.CopyFrom(model)
    for layer in sized.layer:
        if layer.type == "Input" and "data" in layer.top:
            shapes_ = layer.input_param.shape
            if len(shapes_) != len(layer.top):
                return model  # one shape for every top
            dims = shapes_[list(layer.top).index("data")].dim
            if len(dims) != 4:
                return model
            channels = dims[1]
            del dims[:]
            dims.extend([1, channels, *size])
            return sized
    return model


def copy_params(source, target) -> None:
    """Every parameter blob of ``target`` that ``source`` has too (by layer name), copied."""
    for name, blobs in target.params.items():
        if name in source.params:
            for mine, theirs in zip(blobs, source.params[name], strict=True):
                mine.data[...] = theirs.data


def data_gradient_only(pruned, end: str, counts: dict):
    """The pruned net rewritten as the module docstring says, or None for a V1 definition.

    ``counts``: {layer name: number of parameter blobs}, from a loaded net (Caffe knows how
    many each layer type holds; ``param`` entries beyond that number are an error).
    """
    layers = list(pruned.layer)
    if not layers or layers[-1].name != end:
        return None  # V1 format (``layers``), or not pruned to ``end``
    fast = type(pruned)()
    fast.CopyFrom(pruned)
    fast.force_backward = False
    for layer in fast.layer:
        del layer.propagate_down[:]
        while len(layer.param) < counts.get(layer.name, 0):
            layer.param.add()
        for spec in layer.param:
            spec.lr_mult = 0
    last = fast.layer[-1]
    weights = list(last.loss_weight) or [0.0] * len(last.top)
    weights[list(last.top).index(end)] = 1.0
    del last.loss_weight[:]
    last.loss_weight.extend(weights)
    insert_switch(fast)
    return fast


def insert_switch(fast) -> None:
    """Add the learned Scale by 1, in place on ``data``, right after the layer making ``data``."""
    names = {layer.name for layer in fast.layer}
    name = SWITCH
    while name in names:
        name += "_"
    switch = type(fast.layer[0])(name=name, type="Scale", bottom=["data"], top=["data"])
    switch.param.add(lr_mult=1)
    switch.scale_param.axis = 0
    switch.scale_param.num_axes = 0  # one scalar
    switch.scale_param.filler.type = "constant"
    switch.scale_param.filler.value = 1
    layers = list(fast.layer)
    makers = [
        i for i, layer in enumerate(layers) if "data" in layer.top and "data" not in layer.bottom
    ]  # not in-place ones
    at = makers[0] + 1 if makers else 0  # 0: ``data`` is declared by ``input:``
    del fast.layer[:]
    fast.layer.extend(layers[:at] + [switch] + layers[at:])


def param_counts(net) -> dict:
    """{layer name: number of parameter blobs} of a loaded pycaffe net."""
    layers = zip(net._layer_names, net.layers, strict=True)
    return {name: len(layer.blobs) for name, layer in layers}


def check_size(reach, declared) -> tuple:
    """(H, W) for the check: the smallest size every layer takes (at least ``CHECK_SIDE``)
    where checks.py models every layer's output size exactly, else the declared size, at
    which Caffe built every layer (so the check never asks a layer for a size it cannot take).
    """
    if not all(modelled_exactly(layer) for layer in reach.layer):
        return tuple(declared)
    try:
        side = max(checks.smallest_side(reach), CHECK_SIDE)
    except checks.Unknown:
        return tuple(declared)
    return tuple(min(side, d) for d in declared)


# Types whose output has their input's size (Input: the size the check feeds)
PASS_THROUGH = {"Input", "ReLU", "LRN", "Dropout", "Softmax", "Sigmoid", "TanH", "Split"}
SIZE_FIELDS = ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w")


def modelled_exactly(layer) -> bool:
    """Whether checks.infer_shapes computes this layer's output size as Caffe does."""
    if layer.type in PASS_THROUGH:
        return True
    if layer.type == "Concat":
        return not layer.concat_param.HasField("axis") or layer.concat_param.axis == 1
    if layer.type == "Convolution":
        p = layer.convolution_param
        return (
            len(p.kernel_size) == 1
            and len(p.stride) <= 1
            and len(p.pad) <= 1
            and not len(p.dilation)
            and not any(p.HasField(f) for f in SIZE_FIELDS)
        )
    if layer.type == "Pooling":
        p = layer.pooling_param
        return not any(p.HasField(f) for f in SIZE_FIELDS + ("round_mode",))
    return False  # InnerProduct (one size only) and every type checks.py does not model


def one_pass(net, end: str, size) -> list:
    """One forward and backward pass as make_step makes it (L2 objective), on a fixed image.

    Returns copies of the input as the forward pass left it (in-place layers may change it),
    its gradient, and the end blob.
    """
    src, dst = net.blobs["data"], net.blobs[end]
    channels = src.data.shape[1]
    src.reshape(1, channels, *size)
    src.data[0] = np.random.RandomState(0).uniform(-128, 128, (channels, *size))
    net.forward(end=end)
    dst.diff[:] = dst.data
    net.backward(start=end)
    return [src.data.copy(), src.diff.copy(), dst.data.copy()]


def same_bits(ours, theirs) -> bool:
    """Equal bit for bit (NaN and the sign of zero included)."""
    pairs = zip(ours, theirs, strict=True)
    return all(a.shape == b.shape and a.tobytes() == b.tobytes() for a, b in pairs)
