"""A Caffe definition as untrusted input: parse, upgrade, check, prune.

:func:`read_definition` parses a .prototxt once, as Caffe would (upgraded by Caffe's own
``upgrade_net_proto_text`` in a child process, TEST phase filtered), and checks what Caffe
would abort on when it builds a net from it. :func:`prune` and :func:`notebook_reach` cut it to
the layers a dream at an end layer runs. Nothing here builds a net: that is
:mod:`deepdream_caffe.net`, in the process :mod:`deepdream_caffe.worker` makes for Caffe.
These checks are there for early, precise messages; the process boundary is the wall.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .build import SETUP_HINT
from .environment import import_caffe  # noqa: F401 (where the package imports Caffe from)
from .errors import DreamError, not_a_file


def upgrade_tool() -> Path:
    """Caffe's ``upgrade_net_proto_text``, as the build made it."""
    from .build import caffe_build_dir

    for relative in ("install/bin", "build/tools"):
        tool = caffe_build_dir() / relative / "upgrade_net_proto_text"
        if tool.is_file():
            return tool
    raise DreamError("Caffe's upgrade_net_proto_text tool is missing from the build", SETUP_HINT)


class Upgrade:
    """The definition upgraded by Caffe's own code (V0/V1 ``layers``, ``input_dim``, old
    BatchNorm), in a separate process: through pipes, no file written, and a parse error or an
    abort of Caffe's parser ends only that process. The process starts at once, and loads
    libcaffe on another core while this one goes on; :meth:`text` waits for its output. As a
    context manager, it ends the process on the way out, whatever happened."""

    timeout = 120  # seconds

    def __init__(self, path: Path, definition: bytes):
        self.path, self.definition = path, definition
        # logtostderr: glog would otherwise leave log files in the temp folder
        env = {**os.environ, "GLOG_minloglevel": "2", "GLOG_logtostderr": "1"}
        self.child = subprocess.Popen(
            [str(upgrade_tool()), "/dev/stdin", "/dev/stdout"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        with self.child:  # closes the pipes and waits
            if self.child.poll() is None:
                self.child.kill()

    def text(self) -> bytes:
        try:
            out, err = self.child.communicate(self.definition, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise DreamError(
                f"{self.path}: Caffe's parser did not finish in {self.timeout:g} s",
                "fix the definition or pass the right --model-def",
            ) from None
        if self.child.returncode != 0:
            raise DreamError(
                f"{self.path} is not a valid Caffe prototxt ({_caffe_message(err)})",
                "fix the definition or pass the right --model-def",
            )
        return out


def _caffe_message(stderr: bytes) -> str:
    """The first line of Caffe's or protobuf's complaint, without the log prefix."""
    for line in stderr.decode(errors="replace").splitlines():
        if "already in latest proto format" in line or not line.strip():
            continue
        return re.sub(
            r"^(\[libprotobuf \w+ [^\]]*\]|[IWEF]\d{4} [\d:.]+ +\d+ [^\]]*\])\s*", "", line
        ).strip()
    return "Caffe's parser failed"


def definition_bytes(path: Path) -> bytes:
    """The bytes of a .prototxt, read once (a run parses and hashes the same bytes)."""
    path = Path(path)
    if not path.is_file():
        raise not_a_file("model definition", path, "check the --model-def path")
    return path.read_bytes()


def read_definition(path: Path, allow_python_layers: bool = False, data: bytes | None = None):
    """Parse a .prototxt into a ``NetParameter`` as Caffe would (upgraded, TEST phase), and
    check it with :func:`check_structure`; errors name the file. ``data``: its bytes, where
    already read."""
    from google.protobuf import text_format

    path = Path(path)
    with Upgrade(path, definition_bytes(path) if data is None else data) as upgrade:
        caffe = import_caffe()  # while the upgrade child starts
        text = upgrade.text()
    model = caffe.io.caffe_pb2.NetParameter()
    try:
        text_format.Parse(text.decode(), model)
    except (text_format.ParseError, UnicodeDecodeError) as e:
        raise DreamError(
            f"{path} is not a valid Caffe prototxt ({e})",
            "fix the definition or pass the right --model-def",
        ) from e
    model = test_phase(model, path)
    check_structure(caffe, model, path, allow_python_layers)
    return model


FIX = "fix the definition or pass the right --model-def"


def test_phase(model, path):
    """The layers Caffe keeps in the TEST phase (its Net::FilterNet), include/exclude rules
    applied with the definition's own level and stages."""
    TEST = import_caffe().TEST

    state = model.state

    def meets(rule):
        return not (
            (rule.HasField("phase") and rule.phase != TEST)
            or (rule.HasField("min_level") and state.level < rule.min_level)
            or (rule.HasField("max_level") and state.level > rule.max_level)
            or any(s not in state.stage for s in rule.stage)
            or any(s in state.stage for s in rule.not_stage)
        )

    kept = []
    for layer in model.layer:
        if len(layer.include) and len(layer.exclude):
            raise DreamError(
                f"{path}: layer {layer.name!r} has both include and exclude rules", FIX
            )
        if (
            any(map(meets, layer.include))
            if len(layer.include)
            else not any(map(meets, layer.exclude))
        ):
            kept.append(layer)
    filtered = type(model)()
    filtered.CopyFrom(model)
    del filtered.layer[:]
    filtered.layer.extend(kept)
    return filtered


def check_structure(caffe, model, path, allow_python_layers: bool = False) -> None:
    """What Caffe would abort on in any net built from this definition: layer types, blob
    counts and names, numbers, the input. The shapes are checked on the net Caffe will
    really get, pruned or not: :func:`check_buildable`."""
    from . import shapes

    def refuse(problem, fix=FIX):
        raise DreamError(f"{path}: {problem}", fix)

    if not len(model.layer):
        refuse("defines no layers")
    known, names, made = set(caffe.layer_type_list()), set(), set()
    for layer in model.layer:
        what = f"layer {layer.name!r} ({layer.type})"
        if layer.name in names:
            refuse(f"two layers are named {layer.name!r}")
        names.add(layer.name)
        if layer.type not in known:
            refuse(f"layer {layer.name!r} has the unknown type {layer.type!r}")
        if layer.type == "Python":
            if not allow_python_layers:
                refuse(
                    f"layer {layer.name!r} is a Python layer: it would import and run "
                    f"the module {layer.python_param.module!r}",
                    "pass --allow-python-layers if you trust that module's code",
                )
        elif layer.type in shapes.REFUSED:
            refuse(f"{what} {shapes.REFUSED[layer.type]}")
        elif layer.type not in shapes.SHAPES:
            refuse(f"{what} is not modelled by deepdream-caffe's checks")
        if len(layer.blobs):  # Caffe would take them as the layer's parameters, unchecked
            refuse(
                f"layer {layer.name!r} holds parameter blobs in the definition",
                "keep the weights in the --weights file",
            )
        _check_blobs(layer, what, made, refuse)
    _check_in_place(model, refuse)
    _check_numbers(model, refuse)
    declared = shapes.declared_input(model)
    first = next((layer for layer in model.layer if layer.type == "Input"), None)
    if first is None or first.top[0] != "data" or len(declared) != 4 or declared[1] < 1:
        refuse(
            "has no blob named 'data' as its first input, of shape N,C,H,W (the notebook's "
            "input), made by an Input layer or `input:` fields"
        )


def check_buildable(model, path, allow_python_layers: bool = False) -> None:
    """What Caffe checks when it builds ``model`` (the net it will really get, e.g. pruned):
    every layer's shapes at the declared input, param specs and fillers (shapes.py)."""
    from . import shapes

    declared = shapes.declared_input(model)
    try:
        for batch in (1, declared[0]):  # as a dream feeds it, and as Caffe builds it
            built = shapes.infer_shapes(
                model,
                *declared[2:],
                batch=batch,
                partial=allow_python_layers,
                allow_empty=batch != 1,  # one image of the declared size empties no blob
            )
        shapes.check_params(model, built)
    except shapes.TooSmall as e:  # Caffe aborts on some empty blobs (a convolution's bias)
        raise DreamError(
            f"{path}: {e} (its declared input, {declared[3]}x{declared[2]}, is too small "
            "for this layer)",
            "declare a larger input shape in the definition",
        ) from None
    except shapes.ShapeError as e:
        raise DreamError(
            f"{path}: {e} (at its declared input, {declared[3]}x{declared[2]})", FIX
        ) from None


def _check_blobs(layer, what, made, refuse):
    """Caffe's blob rules: counts per type, known inputs, one writer per blob."""
    from .shapes import BLOB_COUNTS, NOT_IN_PLACE, SAME_COUNT

    if layer.type in BLOB_COUNTS:
        for kind, have, (low, high) in zip(
            ("inputs", "outputs"),
            (len(layer.bottom), len(layer.top)),
            BLOB_COUNTS[layer.type],
            strict=False,
        ):
            if have < low or (high is not None and have > high):
                span = f"{low}" if low == high else f"{low} to {high or 'any number of'}"
                refuse(f"{what} takes {span} {kind}, not {have}")
        if layer.type in SAME_COUNT and len(layer.bottom) != len(layer.top):
            refuse(f"{what} needs as many outputs as inputs")
    for bottom in layer.bottom:
        if bottom not in made:
            refuse(f"layer {layer.name!r} reads {bottom!r}, which no earlier layer makes")
    for i, top in enumerate(layer.top):
        in_place = i < len(layer.bottom) and layer.bottom[i] == top
        if top in made and not in_place:
            refuse(f"blob {top!r} is made by more than one layer (layer {layer.name!r} again)")
        if in_place and layer.type in NOT_IN_PLACE:
            refuse(f"{what} cannot write onto its input")
    for field, n, of in (
        ("loss_weight", len(layer.top), "output"),
        ("propagate_down", len(layer.bottom), "input"),
    ):
        if len(getattr(layer, field)) not in (0, n):
            refuse(f"layer {layer.name!r}: give {field} once per {of}, or not at all")
    made.update(layer.top)


def _check_in_place(model, refuse):
    """Caffe gives a blob read by several layers one copy each (Split layers, renaming the
    inputs); a layer working in place on such a blob then no longer does, and Caffe aborts."""
    last, source, readers = {}, {}, {}
    for i, layer in enumerate(model.layer):
        for j, bottom in enumerate(layer.bottom):
            source[i, j] = last[bottom]
            readers[last[bottom]] = readers.get(last[bottom], 0) + 1
        for j, top in enumerate(layer.top):
            last[top] = (i, j)
            if j < len(layer.loss_weight) and layer.loss_weight[j]:
                readers[i, j] = readers.get((i, j), 0) + 1
    for i, layer in enumerate(model.layer):
        for j, top in enumerate(layer.top):
            if j < len(layer.bottom) and layer.bottom[j] == top and readers[source[i, j]] > 1:
                refuse(
                    f"layer {layer.name!r} works in place on {top!r}, which other layers read too",
                    "give the layer its own output blob",
                )


def _check_numbers(model, refuse):
    """No nan or inf anywhere (they corrupt Caffe's max pooling), no integer Caffe's int
    cannot hold."""
    from google.protobuf.descriptor import FieldDescriptor as F

    floats, ints = (
        (F.TYPE_FLOAT, F.TYPE_DOUBLE),
        (F.TYPE_INT32, F.TYPE_INT64, F.TYPE_UINT32, F.TYPE_UINT64),
    )

    def walk(message, where):
        for field, value in message.ListFields():
            values = value if field.is_repeated else [value]
            for v in values:
                if field.type == F.TYPE_MESSAGE:
                    walk(v, f"{where}{field.name}.")
                elif field.type in floats and not math.isfinite(v):
                    refuse(f"{where}{field.name} is {v}; Caffe needs finite numbers")
                elif field.type in ints and abs(v) > 2**31 - 1:
                    refuse(f"{where}{field.name} is {v}, more than Caffe's int holds")

    for layer in model.layer:
        walk(layer, f"layer {layer.name!r}: ")


def _layers(model):
    """The layer list of an upgraded (V2) NetParameter."""
    return model.layer


@dataclass(frozen=True)
class LayerInfo:
    name: str
    type: str
    pre_relu: bool  # a later in-place ReLU changes this blob after the end layer


def dream_layers(model) -> list[LayerInfo]:
    """Layers usable as ``end``: layers whose output blob has the layer's name."""
    layers = list(_layers(model))
    last_relu = {}  # blob -> index of the last in-place ReLU on it: one pass, not one per layer
    for j, layer in enumerate(layers):
        if layer.type == "ReLU":
            for name in set(layer.bottom) & set(layer.top):
                last_relu[name] = j
    out = []
    for i, layer in enumerate(layers):
        if layer.name not in layer.top or layer.name in layer.bottom or not layer.bottom:
            continue  # in-place layers, inputs, and layers with differently named outputs
        pre_relu = last_relu.get(layer.name, -1) > i
        out.append(LayerInfo(layer.name, str(layer.type), pre_relu))
    return out


def check_end(model, end: str) -> None:
    """Refuse an ``end`` that is not a dreamable layer, naming the closest valid ones."""
    names = [info.name for info in dream_layers(model)]
    if end not in names:
        close = difflib.get_close_matches(end, names, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else "no similar name"
        raise DreamError(
            f"unknown layer {end!r} ({hint})",
            "`deepdream-caffe layers` lists the valid --end names",
        )


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


def dream_model(model_def: Path, end: str, allow_python_layers: bool = False):
    """The definition as a dream at ``end`` runs it: parsed, ``end`` checked, pruned."""
    model = prune(read_definition(model_def, allow_python_layers), end)
    check_buildable(model, model_def, allow_python_layers)
    check_dreamable(model, model_def, end)
    return model


def check_dreamable(model, path, end: str | None = None) -> None:
    """What a dream needs beyond a valid net: a 3-channel input (the image, BGR), an ``end``
    blob with a batch and a channel axis (the objectives index them), and a backward pass
    through every layer up to ``end``."""
    from .shapes import NO_BACKWARD, declared_input, infer_shapes

    channels = declared_input(model)[1]
    if channels != 3:
        raise DreamError(
            f"{path}: the net takes {channels}-channel input; DeepDream feeds it "
            "3-channel (BGR) images",
            "use a net trained on colour images",
        )
    for layer in model.layer:
        if layer.type in NO_BACKWARD:
            raise DreamError(
                f"{path}: layer {layer.name!r} ({layer.type}) has no backward "
                "pass in Caffe, and the dream goes through it",
                "choose an --end before it (`deepdream-caffe layers` lists them)",
            )
    if end is not None:
        shapes = infer_shapes(model, *declared_input(model)[2:], partial=True, allow_empty=True)
        if len(shapes.get(end, (1, 1))) < 2:
            raise DreamError(
                f"{path}: the output of --end {end} has the shape "
                f"{shapes[end]}, without the batch and channel axes a dream needs",
                "choose another --end (`deepdream-caffe layers` lists them)",
            )


@contextlib.contextmanager
def definition_file(model):
    """A path Caffe can read ``model`` from that names no file on disk: an anonymous memory
    file (memfd), gone when its descriptor closes, whatever ends the process."""
    fd = os.memfd_create("deepdream-definition", os.MFD_CLOEXEC)
    try:
        data = str(model).encode()
        while data:
            data = data[os.write(fd, data) :]
        yield f"/proc/self/fd/{fd}"
    finally:
        os.close(fd)


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
    field.extend(layers[: index + 1])
    return reach
