"""Net definitions and weights as untrusted input (issues 10, 11 and 14).

Every definition is upgraded by Caffe's own tool and checked by the project before any Caffe
object is built from it. The property tests generate prototxts over every layer type Caffe 1.0
ships and assert: a definition the checks accept builds in Caffe, in a forked child (so an abort
is seen, not suffered), with exactly the shapes shapes.py computes; one they refuse ends the CLI
with exit 1 and one line; no temporary file is left anywhere. The named cases are the ones the
issues list. The V1 tests render both GoogLeNets in Caffe's old format and require bit-identical
dreams.
"""

import json
import os
import signal
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from helpers import Snapshot, assert_refused, run_cli
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from deepdream_caffe import shapes
from deepdream_caffe.definition import (
    check_buildable,
    definition_file,
    dream_layers,
    import_caffe,
    prune,
    read_definition,
)
from deepdream_caffe.errors import DreamError

caffe = import_caffe()
pb = caffe.proto.caffe_pb2
ROOT = Path(__file__).resolve().parents[1]
CAFFE_TYPES = sorted(caffe.layer_type_list())


# --- helpers ---------------------------------------------------------------------------
def cli(*args, tmp, extra_env=None):
    """Run the CLI in its own process in ``tmp``, with a private, empty temp folder; what
    was in ``tmp`` before goes with the result, for ``refused``."""
    tmpdir = tmp / "tmpdir"
    tmpdir.mkdir(exist_ok=True)
    before = Snapshot(tmp)
    done = run_cli(*args, env={"TMPDIR": str(tmpdir), **(extra_env or {})}, cwd=tmp)
    assert not list(tmpdir.iterdir()), "a temporary file was left behind"
    done.before = before
    return done


# a seeded dream of one step in one octave
QUICK = ("--seed", "0", "--iter-n", "1", "--octave-n", "1")


def dream_args(image, model_def, *rest):
    """The arguments of ``dream IMAGE -o out.png --model-def MODEL_DEF`` followed by ``rest``."""
    return ["dream", image, "-o", "out.png", "--model-def", model_def, *rest]


def refused(done, *words):
    """The refusal contract (tests/helpers.py) with exit 1, naming ``words``; nothing written
    into the folder the command ran in."""
    return assert_refused(done, *words, before=done.before, codes=(1,))


def emit(text):
    """Print from a forked child: straight to its stdout, past pytest's capture."""
    os.write(1, (text + "\n").encode())


def in_child(work, timeout=60):
    """Run ``work()`` in a forked child; return (exit code or -signal, what it printed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no return from here
        os.close(read)
        os.dup2(write, 1)
        os.dup2(write, 2)
        signal.alarm(timeout)
        try:
            code = work()
        except DreamError as e:
            emit(f"DreamError: {e}")
            code = 1
        except BaseException as e:  # noqa: BLE001 - reported to the parent as exit 3
            emit(f"{type(e).__name__}: {e}")
            code = 3
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    return (os.waitstatus_to_exitcode(status), text)


def net_text(layers, channels=3, size=(24, 24), batch=1):
    head = (
        f'name: "t"\nlayer {{ name: "data" type: "Input" top: "data" input_param {{ shape '
        f"{{ dim: {batch} dim: {channels} dim: {size[0]} dim: {size[1]} }} }} }}\n"
    )
    return head + "\n".join(layers) + "\n"


def layer(name, kind, bottoms, tops, body=""):
    blobs = "".join(f' bottom: "{b}"' for b in bottoms) + "".join(f' top: "{t}"' for t in tops)
    return f'layer {{ name: "{name}" type: "{kind}"{blobs} {body} }}'


def conv(name, bottom, n=4, k=3, extra=""):
    return layer(
        name,
        "Convolution",
        [bottom],
        [name],
        f"convolution_param {{ num_output: {n} kernel_size: {k} {extra} "
        'weight_filler { type: "gaussian" std: 0.1 } }',
    )


# --- every Caffe 1.0 layer type is modelled or refused ---------------------------------
def test_every_caffe_layer_type_is_modelled_or_refused():
    covered = set(shapes.SHAPES) | set(shapes.REFUSED) | {"Python"}
    assert set(CAFFE_TYPES) <= covered, set(CAFFE_TYPES) - covered
    assert not set(shapes.SHAPES) & set(shapes.REFUSED)


# --- generated definitions: accepted ones build in Caffe with our shapes ---------------
SMALL = st.integers(0, 4)
FILLERS = st.sampled_from(["xavier", "gaussian", "bilinear", "nope"])
# Layer fields every type has: param specs (shared by name), loss weights, propagate_down.
EXTRAS = st.sampled_from(
    [
        "param { lr_mult: 0 }",
        'param { name: "shared" }',
        "loss_weight: 1",
        "propagate_down: true",
        "param {} param {}",
    ]
)
# Layers whose parameters are an axis (in this range) and maybe one more field.
AXIS_BODIES = {
    "Concat": ("concat_param", (-4, 4), ""),
    "Softmax": ("softmax_param", (-5, 4), ""),
    "Reduction": ("reduction_param", (-2, 3), ""),
    "Flatten": ("flatten_param", (-4, 3), "end_axis: 2"),
    "Slice": ("slice_param", (-2, 3), "slice_point: {s}"),
    "Crop": ("crop_param", (0, 3), "offset: {p}"),
    "Tile": ("tile_param", (-2, 3), "tiles: {s}"),
}


def kernel_fields(draw, k, split_when):
    """``kernel_h: k`` and a drawn ``kernel_w`` when the drawn boolean is ``split_when``, else
    ``kernel_size: k``."""
    if draw(st.booleans()) == split_when:
        return f"kernel_h: {k} kernel_w: {draw(SMALL)}"
    return f"kernel_size: {k}"


@st.composite
def layer_body(draw, kind):
    """Parameters for ``kind``: mostly plausible, sometimes wrong."""
    n = draw(st.integers(0, 6))
    k = draw(st.integers(0, 5))
    s = draw(st.integers(0, 3))
    p = draw(SMALL)
    maybe = lambda text: text if draw(st.booleans()) else ""  # noqa: E731
    if kind in ("Convolution", "Deconvolution"):
        kernel = kernel_fields(draw, k, split_when=True)
        return (
            f"convolution_param {{ num_output: {n} {kernel} {maybe(f'stride: {s}')} "
            f"{maybe(f'pad: {p}')} {maybe(f'dilation: {draw(st.integers(1, 3))}')} "
            f"{maybe(f'group: {draw(st.integers(0, 3))}')} {maybe('bias_term: false')} "
            f"{maybe('axis: ' + str(draw(st.integers(-4, 3))))} "
            f'weight_filler {{ type: "{draw(FILLERS)}" }} }}'
        )
    if kind == "Pooling":
        size = kernel_fields(draw, k, split_when=False)
        return (
            f"pooling_param {{ pool: {draw(st.sampled_from(['MAX', 'AVE', 'STOCHASTIC']))} "
            f"{size if not draw(st.integers(0, 5)) == 0 else 'global_pooling: true'} "
            f"{maybe(f'stride: {s}')} {maybe(f'pad: {p}')} "
            f"{maybe('round_mode: FLOOR')} }}"
        )
    if kind in AXIS_BODIES:
        field, (low, high), extra = AXIS_BODIES[kind]
        extra = maybe(extra.format(s=s, p=p))
        return f"{field} {{ axis: {draw(st.integers(low, high))} {extra} }}"
    if kind == "InnerProduct":
        return (
            f"inner_product_param {{ num_output: {n} {maybe('transpose: true')} "
            f"{maybe('axis: ' + str(draw(st.integers(-2, 3))))} }}"
        )
    if kind == "Eltwise":
        return f"eltwise_param {{ operation: {draw(st.sampled_from(['SUM', 'PROD', 'MAX']))} }}"
    if kind == "Reshape":
        dims = " ".join(f"dim: {d}" for d in draw(st.lists(st.integers(-2, 6), max_size=4)))
        return f"reshape_param {{ shape {{ {dims} }} {maybe('axis: 1')} }}"
    if kind in ("Scale", "Bias"):
        field = "scale_param" if kind == "Scale" else "bias_param"
        return (
            f"{field} {{ axis: {draw(st.integers(-2, 3))} "
            f"{maybe(f'num_axes: {draw(st.integers(-2, 3))}')} "
            f"{maybe('bias_term: true') if kind == 'Scale' else ''} }}"
        )
    if kind == "LRN":
        return f"lrn_param {{ local_size: {k} {maybe('norm_region: WITHIN_CHANNEL')} }}"
    if kind in ("Exp", "Log"):
        return f"{kind.lower()}_param {{ base: {draw(st.sampled_from([-1, 0, 1, 2, 'inf']))} }}"
    if kind == "Parameter":
        return f"parameter_param {{ shape {{ dim: {n} dim: {k} }} }}"
    if kind == "Power":
        return f"power_param {{ scale: {draw(st.sampled_from(['1', '2', 'nan', 'inf']))} }}"
    if kind == "PReLU":
        return maybe("prelu_param { channel_shared: true }")
    if kind == "Python":
        return 'python_param { module: "deepdream_probe_module" layer: "X" }'
    if kind in ("Data", "ImageData", "HDF5Data"):
        return 'data_param { source: "/nonexistent" batch_size: 1 }' if kind == "Data" else ""
    return ""


DREAMABLE = sorted(set(shapes.SHAPES) - {"Input", "Parameter", "Silence"})


@st.composite
def definitions(draw, for_dreams=False):
    """A random net: an Input, then 1 to 4 layers of any Caffe type, wired at random.
    ``for_dreams``: 3 channels and the modelled types, so that many nets get to a dream."""
    channels = 3 if for_dreams else draw(st.integers(1, 3))
    size = (draw(st.integers(1, 20)), draw(st.integers(1, 20)))
    blobs, lines = ["data"], []
    if for_dreams:  # a parameter layer first, so that there are weights to write
        blobs, lines = ["data", "conv0"], [conv("conv0", "data", k=1)]
    for i in range(draw(st.integers(1, 4))):
        # every Caffe type; the modelled ones more often, so that many nets get to Caffe
        kind = draw(
            st.sampled_from(DREAMABLE)
            if for_dreams
            else st.sampled_from(CAFFE_TYPES) | st.sampled_from(sorted(shapes.SHAPES))
        )
        two = kind in ("Eltwise", "Crop") or not (for_dreams or draw(st.integers(0, 4)))
        bottoms = [draw(st.sampled_from(blobs)) for _ in range(1 + two)]
        tops = [f"l{i}"] if draw(st.integers(0, 5)) else [f"l{i}", f"c{i}"]
        if not draw(st.integers(0, 4)):
            tops = [bottoms[0]]  # in place
        rule = draw(
            st.sampled_from(
                [
                    "",
                    "",
                    "",
                    "include { phase: TRAIN }",
                    "include { phase: TEST }",
                    "exclude { phase: TEST }",
                    "include { stage: 'x' }",
                    "include { min_level: 1 }",
                ]
            )
        )
        rule += " " + " ".join(draw(st.lists(EXTRAS, max_size=2)))
        if for_dreams:  # fewer ways to be refused before the dream
            rule = ""
        lines.append(layer(f"l{i}", kind, bottoms, tops, draw(layer_body(kind)) + " " + rule))
        blobs += [t for t in tops if t not in blobs]
    return net_text(lines, channels, size)


def build_and_compare(path):
    """In the child: our checks, then Caffe; 0 when Caffe's shapes are ours."""
    model = read_definition(path)
    check_buildable(model, path)
    ours = shapes.infer(model, lambda name, declared: declared, allow_empty=True)
    with definition_file(model) as p:
        net = caffe.Net(p, caffe.TEST)
    theirs = {name: tuple(blob.data.shape) for name, blob in net.blobs.items()}
    mismatch = {b: (s, theirs[b]) for b, s in ours.items() if theirs.get(b, s) != s}
    emit(json.dumps({"mismatch": str(mismatch)}))
    return 2 if mismatch else 0


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=definitions())
def test_generated_definitions_never_abort_and_match_caffe(text, tmp_path_factory):
    path = tmp_path_factory.mktemp("gen") / "net.prototxt"
    path.write_text(text)
    code, out = in_child(lambda: build_and_compare(path))
    event("built by Caffe, same shapes" if code == 0 else "refused by our checks")
    assert code in (0, 1), f"{text}\n-> exit {code}: {out[-1500:]}"
    if code == 1:
        assert out.startswith("DreamError:") and out.count("\n") == 1, out
    else:
        assert json.loads(out.strip().splitlines()[-1]) == {"mismatch": "{}"}


@settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=definitions())
def test_generated_definitions_through_the_cli(text, tmp_path_factory, sky_png):
    """layers and dream in their own processes: exit 0, or 1 with one line; never an abort."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "net.prototxt").write_text(text)
    done = cli("layers", "--model-def", "net.prototxt", "--size", "32x24", tmp=tmp)
    if done.returncode:
        refused(done)
        return
    code, out = in_child(lambda: _synthetic(tmp / "net.prototxt", tmp / "w.caffemodel"))
    assert code in (0, 1), out
    if code == 0:
        end = [line.split()[0] for line in done.stdout.splitlines()[1:]]
        done = cli(
            *dream_args(
                sky_png,
                "net.prototxt",
                "--weights",
                "w.caffemodel",
                *QUICK,
                *(["--end", end[-1]] if end else []),
            ),
            tmp=tmp,
        )
        if done.returncode:
            refused(done)


# A declared input (3x3) smaller than a kernel (4): Caffe aborted (blob.cpp, `Check failed:
# data_`) building the net to make its synthetic weights; now refused before it builds.
SMALLER_THAN_ITS_KERNEL = [conv("conv0", "data", k=1), conv("l0", "conv0", k=4)]


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(text=definitions(for_dreams=True))
@example(text=net_text(SMALLER_THAN_ITS_KERNEL, size=(3, 3)))
def test_generated_definitions_dream_or_refuse(text, tmp_path_factory, sky_png):
    """The whole dream (checks, synthetic weights, load, octaves, backward) in a forked child:
    it finishes or refuses with a DreamError; Caffe never aborts."""
    from deepdream_caffe.job import Job, run_dream

    tmp = tmp_path_factory.mktemp("dream")
    path = tmp / "net.prototxt"
    path.write_text(text)

    def work():
        names = [info.name for info in dream_layers(read_definition(path))]
        _synthetic(path, tmp / "w.caffemodel")
        run_dream(
            Job.from_values(
                dict(
                    input=sky_png,
                    output=tmp / "out.png",
                    model_def=path,
                    weights=tmp / "w.caffemodel",
                    end=names[-1] if names else "none",
                    iter_n=1,
                    octave_n=1,
                    seed=0,
                )
            ),
            say=lambda message: None,
        )
        return 0

    code, out = in_child(work)
    event("dreamed" if code == 0 else "refused")
    assert code in (0, 1), f"{text}\n-> exit {code}: {out[-1500:]}"


def _synthetic(prototxt, out):
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    write_synthetic_weights(prototxt, out)
    return 0


@pytest.fixture(scope="module")
def sky_png(tmp_path_factory):
    import PIL.Image

    path = tmp_path_factory.mktemp("img") / "sky.png"
    rng = np.random.RandomState(0)
    PIL.Image.fromarray(rng.randint(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
    return path


# --- named cases -----------------------------------------------------------------------
TINY = [
    conv("conv1", "data"),
    layer("relu1", "ReLU", ["conv1"], ["conv1"]),
    layer(
        "pool1",
        "Pooling",
        ["conv1"],
        ["pool1"],
        "pooling_param { pool: MAX kernel_size: 2 stride: 2 }",
    ),
    conv("conv2", "pool1"),
]


def write(tmp, text, name="net.prototxt"):
    (tmp / name).write_text(text)
    return tmp / name


@pytest.fixture
def tiny(tmp_path):
    """A small valid net with synthetic weights."""
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    path = write(tmp_path, net_text(TINY))
    write_synthetic_weights(path, tmp_path / "w.caffemodel")
    return path, tmp_path / "w.caffemodel"


def test_train_val_definition_is_refused(tmp_path):
    text = (
        layer(
            "data",
            "Data",
            [],
            ["data", "label"],
            'data_param { source: "/nope/lmdb" batch_size: 1 backend: LMDB }',
        )
        + "\n"
        + conv("conv1", "data")
        + "\n"
        + layer("loss", "SoftmaxWithLoss", ["conv1", "label"], ["loss"])
    )
    write(tmp_path, text)
    refused(
        cli("layers", "--model-def", "net.prototxt", tmp=tmp_path),
        "'data' (Data)",
        "deploy definition",
    )


def test_train_only_layers_are_left_out_as_caffe_does(tmp_path):
    text = net_text(
        TINY
        + [
            layer(
                "loss", "SoftmaxWithLoss", ["conv2", "label"], ["loss"], "include { phase: TRAIN }"
            )
        ]
    )
    write(tmp_path, text)
    done = cli("layers", "--model-def", "net.prototxt", "--size", "24x24", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "conv2" in done.stdout and "loss" not in done.stdout


def test_batchnorm_net_weights_are_checked(tmp_path, sky_png):
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    bn = [
        conv("conv1", "data"),
        layer("bn1", "BatchNorm", ["conv1"], ["conv1"]),
        layer("scale1", "Scale", ["conv1"], ["conv1"], "scale_param { bias_term: true }"),
        layer("relu1", "ReLU", ["conv1"], ["conv1"]),
        conv("conv2", "conv1"),
    ]
    write_synthetic_weights(write(tmp_path, net_text(bn)), tmp_path / "good.caffemodel")
    # weights of the same net with 8 channels in conv1: BatchNorm's blobs no longer fit
    bn8 = [bn[0].replace("num_output: 4", "num_output: 8")] + bn[1:]
    write_synthetic_weights(
        write(tmp_path, net_text(bn8), "net8.prototxt"), tmp_path / "bad.caffemodel"
    )
    args = dream_args(sky_png, "net.prototxt", *QUICK, "--end", "conv2")
    refused(cli(*args, "--weights", "bad.caffemodel", tmp=tmp_path), "does not fit")
    done = cli(*args, "--weights", "good.caffemodel", tmp=tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_declared_input_smaller_than_a_kernel_is_refused_in_one_line(tmp_path, sky_png):
    """Weights made at 32x32 and the definition's input declared 3x3: the dream is refused in
    one line (it was a traceback from the memory estimate), and so are synthetic weights
    (Caffe aborted building the net)."""
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    big = write(tmp_path, net_text(SMALLER_THAN_ITS_KERNEL, size=(32, 32)), "big.prototxt")
    write_synthetic_weights(big, tmp_path / "w.caffemodel")
    small = write(tmp_path, net_text(SMALLER_THAN_ITS_KERNEL, size=(3, 3)))
    args = dream_args(sky_png, "net.prototxt", "--weights", "w.caffemodel", *QUICK)
    line = refused(cli(*args, "--end", "l0", tmp=tmp_path), "'l0'", "declared input, 3x3")
    assert "empty" in line
    code, out = in_child(lambda: _synthetic(small, tmp_path / "w3.caffemodel"))
    assert code == 1 and "declared input, 3x3" in out, out
    assert not (tmp_path / "w3.caffemodel").exists()


def test_a_side_branch_smaller_than_its_kernel_is_refused_with_notebook_net(tmp_path, sky_png):
    """The layers before --end that it does not need are built too, e.g. a side branch whose
    kernel (4) is larger than the declared input (3x3): one line (with --notebook-net it was a
    traceback from the memory estimate)."""
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    side = [conv("conv0", "data", k=1), conv("side", "conv0", k=4), conv("l0", "conv0", k=1)]
    write_synthetic_weights(
        write(tmp_path, net_text(side, size=(32, 32)), "big.prototxt"), tmp_path / "w.caffemodel"
    )
    write(tmp_path, net_text(side, size=(3, 3)))
    args = dream_args(sky_png, "net.prototxt", "--weights", "w.caffemodel", *QUICK, "--end", "l0")
    for notebook_net in (["--notebook-net"], []):  # Caffe builds the side branch either way
        refused(cli(*args, *notebook_net, tmp=tmp_path), "'side'", "declared input, 3x3")


def test_h5_weights_are_refused(tmp, tiny, sky_png):
    (tiny[1].parent / "w.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    refused(
        cli(
            *dream_args(sky_png, tiny[0], "--weights", "w.h5", "--end", "conv2"),
            tmp=tmp,
        ),
        "HDF5",
    )


@pytest.fixture
def tmp(tmp_path):
    return tmp_path


def test_recurrent_layers_are_refused(tmp_path):
    text = net_text(
        [layer("lstm", "LSTM", ["data", "data"], ["h"], "recurrent_param { num_output: 4 }")]
    )
    write(tmp_path, text)
    refused(cli("layers", "--model-def", "net.prototxt", tmp=tmp_path), "recurrent")


def test_one_channel_net_lists_layers_and_refuses_to_dream(tmp_path, sky_png):
    from deepdream_caffe.lab.synthetic import write_synthetic_weights

    path = write(tmp_path, net_text(TINY, channels=1))
    write_synthetic_weights(path, tmp_path / "w.caffemodel")
    done = cli("layers", "--model-def", "net.prototxt", "--size", "32x24", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "4x22x30" in done.stdout  # conv1: 32x24 - 2
    refused(
        cli(
            *dream_args(sky_png, "net.prototxt", "--weights", "w.caffemodel", "--end", "conv2"),
            tmp=tmp_path,
        ),
        "1-channel",
    )
    assert not (tmp_path / "out.png").exists()


@pytest.mark.parametrize("size", ["1x1", "10x10"])
def test_layers_below_the_minimum_marks_the_empty_layers(size, nets, tmp_path):
    done = cli("layers", "--model-def", nets["bvlc_googlenet"][0], "--size", size, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "too small" in rows["inception_4c/output"] and "too small" not in rows["conv1/7x7_s2"]


@pytest.mark.parametrize(
    "size, words", [("1x1", "at least 3x3"), ("100000x100000", "Caffe's limit")]
)
def test_layers_size_out_of_range_is_one_line(size, words, tmp_path):
    write(tmp_path, net_text(TINY))
    refused(
        cli("layers", "--model-def", "net.prototxt", "--size", size, tmp=tmp_path), "--size", words
    )


def test_layers_shapes_are_caffes_without_building_a_net(nets):
    from deepdream_caffe.report import blob_shapes

    model = read_definition(nets["bvlc_googlenet"][0])
    ours = blob_shapes(model, (256, 240))

    def caffe_shapes():
        pruned = prune(model, "pool5/7x7_s1")
        with definition_file(pruned) as p:
            net = caffe.Net(p, caffe.TEST)
        net.blobs["data"].reshape(1, 3, 240, 256)
        net.reshape()
        emit(json.dumps({k: b.data.shape[1:] for k, b in net.blobs.items()}))
        return 0

    code, out = in_child(caffe_shapes)
    assert code == 0, out
    theirs = {k: tuple(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}
    assert ours == {name: theirs[name] for name in ours}  # Caffe adds its Split blobs


def test_pre_relu_only_before_an_in_place_relu(nets):
    layers = {
        info.name: info.pre_relu
        for info in dream_layers(read_definition(nets["bvlc_googlenet"][0]))
    }
    assert layers["conv1/7x7_s2"] and layers["inception_4c/1x1"]
    assert not layers["pool5/7x7_s1"]  # followed by an in-place Dropout, not a ReLU
    assert not layers["inception_4c/output"]


class WorkBudget(Exception):
    pass


@pytest.mark.slow
def test_layers_of_a_30000_layer_chain_is_linear_work(tmp_path):
    """`layers` on a 2 MB definition of 30,000 chained layers: the work (Python calls, not
    seconds) grows with the layers. A scan of the later layers for each layer made ~10^8
    calls here (minutes); the budget stops such a scan at 200 calls a layer, at once."""
    from deepdream_caffe.report import layer_table

    convs = 20_000
    lines = []
    for i in range(convs):  # conv, then an in-place ReLU after every second conv
        lines.append(conv(f"c{i}", f"c{i - 1}" if i else "data", n=3, k=1))
        if i % 2 == 0:
            lines.append(layer(f"r{i}", "ReLU", [f"c{i}"], [f"c{i}"]))
    model = read_definition(write(tmp_path, net_text(lines, size=(8, 8))))
    assert len(model.layer) == 1 + 30_000
    calls, budget = [0], 200 * len(model.layer)

    def count(frame, event, arg):
        if event == "call":
            calls[0] += 1
            if calls[0] > budget:
                raise WorkBudget(f"more than {budget} Python calls")

    sys.setprofile(count)
    try:
        table = layer_table(model, (32, 24))
    finally:
        sys.setprofile(None)
    assert len(table) == 1 + convs
    assert sum(line.rstrip().endswith("*") for line in table[1:]) == convs // 2


# --- Python layers ---------------------------------------------------------------------
PROBE = """
import pathlib
pathlib.Path({marker!r}).write_text("imported")
import caffe

class Identity(caffe.Layer):
    def setup(self, bottom, top):
        pass
    def reshape(self, bottom, top):
        top[0].reshape(*bottom[0].data.shape)
    def forward(self, bottom, top):
        top[0].data[...] = bottom[0].data
    def backward(self, top, propagate_down, bottom):
        bottom[0].diff[...] = top[0].diff
"""


def test_python_layers_are_refused_unless_allowed(tmp_path, tiny, sky_png):
    marker = tmp_path / "imported.txt"
    (tmp_path / "probe_module.py").write_text(PROBE.format(marker=str(marker)))
    text = net_text(
        TINY
        + [
            layer(
                "py",
                "Python",
                ["conv2"],
                ["py"],
                'python_param { module: "probe_module" layer: "Identity" }',
            )
        ]
    )
    write(tmp_path, text)
    env = {"PYTHONPATH": str(tmp_path)}
    args = dream_args(sky_png, "net.prototxt", "--weights", tiny[1], "--end", "py", *QUICK)
    for command in (["layers", "--model-def", "net.prototxt"], args):
        refused(
            cli(*command, tmp=tmp_path, extra_env=env),
            "'py'",
            "probe_module",
            "--allow-python-layers",
        )
        assert not marker.exists()
    done = cli(*args, "--allow-python-layers", tmp=tmp_path, extra_env=env)
    assert done.returncode == 0, done.stderr
    assert marker.exists()


def test_cli_help_documents_allow_python_layers():
    done = run_cli("dream", "--help")
    assert "--allow-python-layers" in done.stdout and "runs its code" in " ".join(
        done.stdout.split()
    )


# --- numbers and blobs Caffe would abort on ----------------------------------------------
def shared_convs(first, second):
    """Two convolutions on conv1 sharing their weights, each with its own param spec."""
    return "\n".join(
        layer(
            name,
            "Convolution",
            ["conv1"],
            [name],
            f'param {{ name: "w" {spec} }} convolution_param {{ num_output: 4 kernel_size: 1 }}',
        )
        for name, spec in (("a", first), ("b", second))
    )


@pytest.mark.parametrize(
    "body, words",
    [
        (layer("p", "Power", ["conv1"], ["p"], "power_param { scale: nan }"), "nan"),
        (conv("c", "conv1", n=4294967295), "int"),
        (
            layer("a", "ReLU", ["conv1"], ["conv1b"]) + layer("b", "ReLU", ["conv1"], ["conv1b"]),
            "more than one layer",
        ),
        (layer("e", "Eltwise", ["conv1", "data"], ["e"]), "differ in shape"),
        (layer("f", "Flatten", ["conv1"], ["conv1"]), "onto its input"),
        (  # Caffe builds it, then pools its own fill: refused as a class of its own
            layer("p", "Pooling", ["conv1"], ["conv1"], "pooling_param { kernel_size: 1 }"),
            "onto its input",
        ),
        (conv("g", "conv1", extra="group: 3"), "group"),
        (layer("s", "Scale", ["conv1"], ["s"], "blobs { shape { dim: 9 } }"), "parameter blobs"),
    ],
)
def test_definitions_caffe_aborts_on_are_one_line(body, words, tmp_path):
    write(tmp_path, net_text([conv("conv1", "data"), body]))
    refused(cli("layers", "--model-def", "net.prototxt", tmp=tmp_path), words)


@pytest.mark.parametrize(
    "body, words",
    [
        (layer("bn", "BatchNorm", ["conv1"], ["bn"], "param { }"), "lr_mult: 0"),
        (layer("bn", "BatchNorm", ["conv1"], ["conv1"], "param { name: 's' }"), "lr_mult: 0"),
        (shared_convs("lr_mult: 1", "lr_mult: 2"), "lr_mult 2 here but 1"),
        (shared_convs("decay_mult: 0", "lr_mult: 1 decay_mult: 1"), "decay_mult 1 here but 0"),
    ],
)
def test_param_specs_caffe_aborts_on_are_refused_before_it_builds(body, words, tmp_path):
    """Checked where every net is checked before Caffe builds it (dreams, synthetic weights)."""
    write(tmp_path, net_text([conv("conv1", "data"), body]))
    code, out = in_child(lambda: build_and_compare(tmp_path / "net.prototxt"))
    assert code == 1 and out.startswith("DreamError:") and out.count("\n") == 1, (code, out)
    assert words in out


@pytest.mark.parametrize(
    "body",
    [
        layer("bn", "BatchNorm", ["conv1"], ["bn"], "param { lr_mult: 0 } " * 3),
        shared_convs("lr_mult: 1", ""),
        shared_convs("", "lr_mult: 3 decay_mult: 2"),
        shared_convs("lr_mult: 1 decay_mult: 0", "lr_mult: 1 decay_mult: 0"),
    ],
)
def test_definitions_caffe_builds_are_not_refused(body, tmp_path):
    write(tmp_path, net_text([conv("conv1", "data"), body]))
    code, out = in_child(lambda: build_and_compare(tmp_path / "net.prototxt"))
    assert code == 0, out


def test_no_temporary_definition_is_written(tiny, tmp_path, sky_png):
    done = cli(
        *dream_args(sky_png, tiny[0], "--weights", tiny[1], "--end", "conv2", *QUICK),
        tmp=tmp_path,
    )  # cli() asserts the private temp folder stays empty
    assert done.returncode == 0, done.stderr


# --- V1 definitions (issue 11 §3) --------------------------------------------------------
V1_TYPES = {
    "Convolution": "CONVOLUTION",
    "Pooling": "POOLING",
    "ReLU": "RELU",
    "LRN": "LRN",
    "Concat": "CONCAT",
    "InnerProduct": "INNER_PRODUCT",
    "Dropout": "DROPOUT",
    "Softmax": "SOFTMAX",
}


def to_v1(model) -> str:
    """Caffe's old format of a V2 net: ``layers`` with enum types, ``input_dim``."""
    old = pb.NetParameter()
    old.name = model.name
    for new in model.layer:
        if new.type == "Input":
            old.input.extend(new.top)
            old.input_dim.extend(new.input_param.shape[0].dim)
            continue
        v1 = old.layers.add()
        v1.name, v1.type = new.name, pb.V1LayerParameter.LayerType.Value(V1_TYPES[new.type])
        v1.bottom.extend(new.bottom)
        v1.top.extend(new.top)
        for spec in new.param:
            v1.blobs_lr.append(spec.lr_mult)
            v1.weight_decay.append(spec.decay_mult)
        for field, value in new.ListFields():
            if field.name.endswith("_param") and field.name != "param":
                getattr(v1, field.name).CopyFrom(value)
    return str(old)


@pytest.fixture(scope="module")
def v1_nets(nets, tmp_path_factory):
    from google.protobuf import text_format

    d = tmp_path_factory.mktemp("v1")
    out = {}
    for name, (definition, weights) in nets.items():
        v2 = text_format.Parse(Path(definition).read_text(), pb.NetParameter())
        path = d / f"{name}_v1.prototxt"
        path.write_text(to_v1(v2))
        assert "layers {" in path.read_text() and "input_dim" in path.read_text()
        out[name] = (path, weights)
    return out


@pytest.mark.parametrize("model", ["bvlc_googlenet", "places205_googlenet"])
def test_v1_layers_listing_matches_v2(model, nets, v1_nets, tmp_path):
    v2 = cli("layers", "--model-def", nets[model][0], "--size", "200x150", tmp=tmp_path)
    v1 = cli("layers", "--model-def", v1_nets[model][0], "--size", "200x150", tmp=tmp_path)
    assert v2.returncode == v1.returncode == 0, v1.stderr
    assert v1.stdout == v2.stdout and "Convolution" in v1.stdout


@pytest.mark.parametrize(
    "model, end",
    [("bvlc_googlenet", "inception_4c/output"), ("places205_googlenet", "inception_4d/output")],
)
def test_v1_prunes_to_the_same_net(model, end, nets, v1_nets):
    def summary(path):
        return [
            (x.name, x.type, list(x.bottom), list(x.top))
            for x in prune(read_definition(path), end).layer
        ]

    v1, v2 = summary(v1_nets[model][0]), summary(nets[model][0])
    assert v1[1:] == v2[1:] and not any("loss1" in name for name, *_ in v1)


@pytest.mark.parametrize(
    "model, end, guided",
    [
        ("bvlc_googlenet", "inception_4c/output", False),
        ("places205_googlenet", "inception_4c/output", False),
        ("bvlc_googlenet", "inception_3b/output", True),
    ],
)
def test_v1_dreams_are_bit_identical(model, end, guided, nets, v1_nets, sky):
    from deepdream_caffe import dream
    from deepdream_caffe.models import IMAGENET_MEAN_BGR
    from deepdream_caffe.net import load_net

    results, setups = [], []
    for definition, weights in (nets[model], v1_nets[model]):
        net = load_net(definition, weights, end, IMAGENET_MEAN_BGR)
        kw = {}
        if guided:
            kw["objective"] = dream.objective_guide(dream.guide_features(net, sky[:48, :64], end))
        results.append(
            dream.deepdream(
                net, sky, iter_n=2, octave_n=2, end=end, rng=np.random.RandomState(0), **kw
            )
        )
        setups.append(net.dream_setup)
    assert setups[0] == setups[1]
    assert np.array_equal(results[0], results[1])


# --- the Places205 archive: members found by file name ----------------------------------
def _archive(tmp_path, members):
    import io

    path = tmp_path / "a.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_archive_members_found_in_any_folder(tmp_path):
    from deepdream_caffe.models import _extract

    archive = _archive(
        tmp_path,
        {
            "x/y/deploy_places205.protxt": b"def",
            "z/googlelet_places205_train_iter_2400000.caffemodel": b"w",
        },
    )
    _extract(
        archive,
        ["deploy_places205.protxt", "googlelet_places205_train_iter_2400000.caffemodel"],
        tmp_path / "out",
    )
    assert (tmp_path / "out" / "deploy_places205.protxt").read_bytes() == b"def"


def test_archive_missing_member_names_what_it_holds(tmp_path):
    from deepdream_caffe.models import _extract

    archive = _archive(tmp_path, {"places/deploy.prototxt": b"def"})
    with pytest.raises(DreamError, match="it holds places/deploy.prototxt"):
        _extract(archive, ["deploy_places205.protxt"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_upgrade_child_ends_whatever_happens(tmp_path, monkeypatch):
    """definition.Upgrade: a parser that hangs is ended after its timeout, with one line; an
    exception while it runs (a failed import, Ctrl-C) ends it too; no child is left."""
    from deepdream_caffe import definition

    hang = tmp_path / "hang"
    hang.write_text("#!/bin/sh\nexec sleep 600\n")
    hang.chmod(0o755)
    monkeypatch.setattr(definition, "upgrade_tool", lambda: hang)
    monkeypatch.setattr(definition.Upgrade, "timeout", 0.5)
    with pytest.raises(DreamError, match="did not finish in 0.5 s"):
        with definition.Upgrade(tmp_path / "net.prototxt", b"") as upgrade:
            child = upgrade.child
            upgrade.text()
    assert child.returncode is not None  # ended and reaped
    with pytest.raises(KeyboardInterrupt):
        with definition.Upgrade(tmp_path / "net.prototxt", b"") as upgrade:
            child = upgrade.child
            raise KeyboardInterrupt
    assert child.returncode is not None
