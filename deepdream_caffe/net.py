"""Building a Caffe net for dreaming, the way dream.ipynb cell 3 did, minus ``tmp.prototxt``.

The notebook's net is the whole definition with ``force_backward`` set (``--notebook-net``).
By default the net is pruned to the layers the chosen end layer needs (which drops the
auxiliary heads of Places205) and rewritten to compute the data gradient only, checked against
the notebook's net before use (``deepdream_caffe/fastnet.py``; no number changes, see
docs/deviations.md). The net is a ``caffe.Classifier`` with the notebook's mean and channel
swap, so ``net.transformer.mean['data']`` is exactly what the notebook's preprocess used.

Building a net is what Caffe can abort or crash on, so the commands do it in the child process
of :mod:`deepdream_caffe.worker`, from a :class:`~deepdream_caffe.plan.Plan` that has already
parsed and checked the definition and read the weights.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .definition import import_caffe
from .errors import DreamError, not_a_file

WHOLE, REACH, FAST = "whole", "reach", "fast"  # the net set-ups build() makes


def build(
    model, weights: str, end: str | None, mean, channel_swap, gpu=None, setup=FAST, size=None
):
    """A ``caffe.Classifier`` ready for dreaming at ``end``, from a parsed, checked definition.

    ``model``: the whole definition (a ``NetParameter``, TEST phase); ``weights``: a path Caffe
    reads them from. ``setup``: ``WHOLE`` (or no ``end``) builds the notebook's net exactly,
    the whole definition with force_backward; ``REACH`` the notebook's net as far as its calls
    run it (every layer up to ``end``); ``FAST`` the net pruned to ``end`` computing the data
    gradient only, once checked bit for bit against ``REACH``
    (:func:`deepdream_caffe.fastnet.load_fast`), and built for ``size`` (H, W), the largest
    image it will get, where given. ``net.dream_setup`` says which was used.
    """
    from .definition import definition_file, notebook_reach, prune
    from .fastnet import NOTEBOOK_SETUP, NOTEBOOK_UP_TO, load_fast

    caffe = import_caffe()
    model = type(model).FromString(model.SerializeToString())
    model.force_backward = True
    select_device(caffe, gpu)
    net_mean = mean_in_net_order(mean, channel_swap)

    def make(definition, with_weights=True):
        # The notebook wrote tmp.prototxt into the working folder; here no file at all.
        with definition_file(definition) as path:
            if not with_weights:  # a net for fastnet's check, its parameters copied in
                return caffe.Net(path, caffe.TEST)
            return caffe.Classifier(path, weights, mean=net_mean, channel_swap=tuple(channel_swap))

    if setup == WHOLE or end is None:
        net = make(model)
        net.dream_setup = NOTEBOOK_SETUP
        return net
    if setup == REACH:
        net = make(notebook_reach(model, end))
        net.dream_setup = (
            f"{NOTEBOOK_UP_TO} {end}: a dream this small does not repay the data-gradient-only "
            "net's set-up and check"
        )
        return net
    return load_fast(notebook_reach(model, end), prune(model, end), end, make, size)


def load_net(
    model_def: Path,
    weights: Path,
    end: str | None,
    mean,
    channel_swap=(2, 1, 0),
    gpu: int | None = None,
    prune_net: bool = True,
    notebook_net: bool = False,
    allow_python_layers: bool = False,
    size=None,
):
    """Parse, check and build in this process: for the lab's tools and the tests, which hold
    a net beside the notebook's own code. The commands go through a plan and a child process.
    ``size``: as for :func:`build`.
    """
    from .checks import check_weights
    from .definition import (
        check_buildable,
        check_dreamable,
        check_end,
        notebook_reach,
        read_definition,
    )

    model = read_definition(model_def, allow_python_layers)
    weights = Path(weights)
    if not weights.is_file():
        raise not_a_file("weights file", weights, "check the --weights path")
    if end is not None:
        check_end(model, end)
    whole = end is None or notebook_net or not prune_net
    built = model if whole else notebook_reach(model, end)  # the most this set-up builds
    check_buildable(built, model_def, allow_python_layers)
    check_dreamable(built, model_def, end)
    check_weights(built, weights.read_bytes(), weights)  # Caffe aborts on weights that do not fit
    setup = WHOLE if whole else FAST
    return build(model, str(weights), end, mean, channel_swap, gpu, setup, size)


def select_device(caffe, gpu: int | None) -> None:
    """CPU, or GPU ``gpu`` after checking that this Caffe and this machine have one."""
    if gpu is None:
        caffe.set_mode_cpu()
        return
    from .build import build_record

    if not build_record().get("variant", "cpu").startswith("cuda"):
        raise DreamError(
            "--gpu needs the CUDA build of Caffe; this one is CPU-only",
            "leave out --gpu, or build it with `make setup CUDA=1`",
        )
    count = cuda_device_count()
    if gpu >= count:
        raise DreamError(
            f"--gpu {gpu}: this machine has {count} CUDA device(s)",
            "leave out --gpu, or choose one below the count",
        )
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


def mean_in_net_order(mean_bgr, channel_swap):
    """The B,G,R mean reordered as the net's input channels (unchanged for 2,1,0)."""
    rgb = np.float32(mean_bgr)[::-1]
    return rgb[list(channel_swap)]
