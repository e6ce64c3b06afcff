"""``deepdream-caffe layers``: the dreamable layers of a net and their blob shapes; and the
command line as typed, for the sidecar (:mod:`deepdream_caffe.sidecar`)."""

from __future__ import annotations

import shlex

from .errors import DreamError


def command_line(argv) -> str:
    return shlex.join(["deepdream-caffe", *map(str, argv)])


def layer_table(model, size) -> list[str]:
    """``deepdream-caffe layers``: the dreamable layers with their blob shapes at ``size``."""
    from .definition import dream_layers

    shapes = blob_shapes(model, size)
    lines = [
        f"# layers usable as --end, blob shape at {size[0]}x{size[1]} input;"
        " * = pre-ReLU (the notebook optimised the value before its ReLU);"
        " too small = empty at this size"
    ]
    for info in dream_layers(model):
        shape = shapes.get(info.name, ())
        shape = "too small" if shape is None else "x".join(map(str, shape)) or "?"
        lines.append(f"{info.name:32s} {info.type:12s} {shape:>16s} {'*' if info.pre_relu else ''}")
    return lines


def blob_shapes(model, size) -> dict:
    """Blob shapes (batch axis left out) of ``model`` for one image of ``size`` (W, H), up to
    its deepest layer that is not fully connected, from shapes.py: no Caffe net is built.
    A layer whose output would be empty at this size maps to None."""
    from .checks import smallest_side
    from .definition import prune
    from .shapes import ShapeError, infer_shapes

    last = _ends(model)
    if not last:
        return {}
    # Only the layers the deepest convolutional blob needs: classifier heads need 224x224.
    pruned = prune(model, last[-1])
    w, h = size
    try:
        shapes = infer_shapes(pruned, h, w, partial=True, skip_empty=True)
    except ShapeError as e:
        raise DreamError(f"--size {w}x{h}: {e}", "choose another --size") from None
    out = {top: None for layer in pruned.layer for top in layer.top}  # None: empty here
    out.update({name: shape[1:] for name, shape in shapes.items()})
    if all(out.get(name) is None for name in last):
        side = smallest_side(prune(pruned, last[0]))
        raise DreamError(
            f"--size {w}x{h} is too small for this net: even layer {last[0]}'s "
            f"output would be empty",
            f"give a --size of at least {side}x{side}",
        )
    return out


def _ends(model):
    """Dreamable layers up to the last one that is not fully connected."""
    from .definition import dream_layers

    return [
        info.name for info in dream_layers(model) if info.type not in ("InnerProduct", "Softmax")
    ]
