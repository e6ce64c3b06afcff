"""Seeded, synthetic weights for the real architectures: for tests and benchmarks only.

The published weights cannot be downloaded everywhere (not on the machines this project is
tested on), so tests exercise the algorithm on the real GoogLeNet graphs filled with
random weights made here. Nothing in the package ever uses them in place of real weights:
they are written only where a caller asks, and the files say what they are in their name.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

# The recipe, recorded with every golden output: He-normal weights, small uniform biases.
RECIPE = "He normal (std sqrt(2/fan_in)) weights, uniform(-0.1, 0.1) biases, RandomState(seed)"
# (BatchNorm layers, which the GoogLeNets lack, get a uniform(-0.1, 0.1) mean and a
# uniform(0.5, 1.5) variance, so that their output is finite.)


def write_synthetic_weights(prototxt, out_path, seed: int = 0) -> Path:
    """Fill every parameter of the net in ``prototxt`` from ``RandomState(seed)``; save it.

    The definition is checked here; the net is built, filled and saved in a child process
    (:mod:`deepdream_caffe.worker`), and the file appears only when that succeeded."""
    from .. import worker
    from ..definition import check_buildable, read_definition
    from ..imageio import atomic_path

    model = read_definition(prototxt)  # checked first, like any input
    check_buildable(model, prototxt)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:  # a new file's usual mode, not mkstemp's 0600
        worker.run(_fill_and_save, model, str(tmp), seed)
    return out_path


def _fill_and_save(send, model, path: str, seed: int) -> None:
    """The Caffe part: build ``model``, fill it from ``RandomState(seed)``, save at ``path``."""
    from ..definition import definition_file, import_caffe

    caffe = import_caffe()
    with definition_file(model) as definition:
        net = caffe.Net(definition, caffe.TEST)
    rng = np.random.RandomState(seed)
    for name, params in net.params.items():
        if net.layer_dict[name].type == "BatchNorm":  # a plausible mean, variance and factor
            params[0].data[...] = rng.uniform(-0.1, 0.1, params[0].data.shape)
            params[1].data[...] = rng.uniform(0.5, 1.5, params[1].data.shape)
            params[2].data[...] = 1
            continue
        weights = params[0].data
        fan_in = weights[0].size if weights.ndim else 1  # a shared PReLU slope is 0-D
        weights[...] = rng.standard_normal(weights.shape) * np.sqrt(2.0 / fan_in)
        for bias in params[1:]:
            bias.data[...] = rng.uniform(-0.1, 0.1, bias.data.shape)
    net.save(path)


def write_googlenet(out_path, num_classes: int = 1000, aux_heads: bool = False) -> Path:
    """Write the GoogLeNet builder's definition (batch 1) to ``out_path``."""
    from ..googlenet import googlenet

    out_path = Path(out_path)
    out_path.write_text(str(googlenet(num_classes, aux_heads, input_shape=(1, 3, 224, 224))))
    return out_path
