"""A PyTorch (CPU) twin of a pruned Caffe net: the benchmark's baseline and the bundle's
second implementation.

:class:`CaffeModule` is an ``nn.Module`` with one submodule per Caffe layer, named after the
layer (``/`` becomes ``_``), built from the prototxt and the weights (a pycaffe net's params,
or a bundle's ``weights.npz``). Like a typical PyTorch port, a convolution module outputs its
values before the ReLU that follows it (Caffe's blob holds them after: its ReLU is in place).
Layers: Input, Convolution, ReLU, Pooling (Caffe's ceil rounding), LRN, Concat, Dropout (test
phase: identity), InnerProduct, Softmax.

:class:`TorchNet` wraps it in the few things the notebook's code touches on a pycaffe net
(``blobs[name].data/.diff``, ``forward(end)``, ``backward(start)``, ``transformer.mean``), so
:func:`deepdream_caffe.dream.deepdream` runs on it unchanged. Its numbers agree with Caffe's to
float32 rounding, not bit for bit; it is never used to dream.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def module_name(layer_name: str) -> str:
    """The submodule name of a Caffe layer: ``inception_3a/1x1`` -> ``inception_3a_1x1``."""
    return layer_name.replace("/", "_").replace(".", "_")


class Concat(nn.Module):
    def forward(self, *xs):
        return torch.cat(xs, 1)


class Flatten(nn.Module):
    def forward(self, x):
        return x.flatten(1)


def _first(values, default):
    return values[0] if len(values) else default


def _layer_module(layer, blobs):
    """The ``nn.Module`` computing one Caffe layer, with its weights copied in."""
    kind = layer.type
    if kind == "Convolution":
        p = layer.convolution_param
        w = blobs[0]
        conv = nn.Conv2d(
            w.shape[1] * p.group,
            w.shape[0],
            w.shape[2:],
            stride=_first(p.stride, 1),
            padding=_first(p.pad, 0),
            groups=p.group,
            bias=len(blobs) > 1,
        )
        _load(conv, blobs)
        return conv
    if kind == "InnerProduct":
        w = blobs[0]
        fc = nn.Linear(w.shape[1], w.shape[0], bias=len(blobs) > 1)
        _load(fc, blobs)
        return nn.Sequential(Flatten(), fc)
    if kind == "ReLU":
        return nn.ReLU()
    if kind == "Pooling":
        p = layer.pooling_param
        if p.pool == p.MAX:
            return nn.MaxPool2d(p.kernel_size, p.stride, p.pad, ceil_mode=True)
        if p.pad:
            raise ValueError("padded average pooling is not supported")
        return nn.AvgPool2d(p.kernel_size, p.stride, ceil_mode=True)
    if kind == "LRN":
        p = layer.lrn_param
        return nn.LocalResponseNorm(p.local_size, p.alpha, p.beta, p.k)
    if kind == "Concat":
        return Concat()
    if kind == "Dropout":
        return nn.Identity()
    if kind == "Softmax":
        return nn.Softmax(1)
    raise ValueError(f"layer type {kind} is not supported by the PyTorch twin")


def _load(module, blobs):
    with torch.no_grad():
        module.weight.copy_(torch.from_numpy(np.asarray(blobs[0], np.float32)))
        if len(blobs) > 1:
            module.bias.copy_(torch.from_numpy(np.asarray(blobs[1], np.float32).ravel()))


class CaffeModule(nn.Module):
    """The layers of ``model`` (a pruned NetParameter) in order, as named submodules.

    ``params``: ``{layer name: [weights, bias]}`` as numpy arrays. ``forward(data)`` takes a
    1 x 3 x H x W tensor and returns the last layer's output.
    """

    def __init__(self, model, params: dict):
        super().__init__()
        self.plan = []  # (submodule name, bottoms, top)
        for layer in model.layer:
            if layer.type == "Input":
                continue
            name = module_name(layer.name)
            self.add_module(name, _layer_module(layer, params.get(layer.name, [])))
            self.plan.append((name, list(layer.bottom), layer.top[0]))
        self.requires_grad_(False)

    def forward(self, data):
        values = {"data": data}
        for name, bottoms, top in self.plan:
            values[top] = getattr(self, name)(*(values[b] for b in bottoms))
        return values[top]

    def name_map(self) -> dict:
        """``{Caffe blob: submodule}`` for every blob a layer (not an in-place ReLU) makes."""
        return {top: name for name, bottoms, top in self.plan if top not in bottoms}


def params_from_weights_npz(arrays) -> dict:
    """``{layer: [blob 0, blob 1, ...]}`` from a bundle's ``weights.npz`` (keys LAYER/INDEX)."""
    params: dict = {}
    for key in arrays:
        layer, _, index = key.rpartition("/")
        params.setdefault(layer, {})[int(index)] = arrays[key]
    return {layer: [blobs[i] for i in sorted(blobs)] for layer, blobs in params.items()}


class Blob:
    def __init__(self, shape=(1,)):
        self.reshape(*shape)

    def reshape(self, *shape):
        self.data = np.zeros(shape, np.float32)
        self.diff = np.zeros(shape, np.float32)


class Blobs(dict):
    """Like pycaffe's ``net.blobs``: make_step takes ``blobs[end]`` before the forward pass."""

    def __missing__(self, name):
        self[name] = Blob()
        return self[name]


class Transformer:
    def __init__(self, mean, channel_swap=(2, 1, 0)):
        self.mean = {"data": np.float32(mean)[:, None, None]}
        self.channel_swap = {"data": tuple(channel_swap)}  # read by dream.preprocess


class TorchNet:
    """A pycaffe-like net over :class:`CaffeModule`, for :func:`dream.deepdream`."""

    def __init__(self, model, caffe_net, mean, weight_grads=False):
        """``model``: the pruned NetParameter; ``caffe_net``: a pycaffe net with its weights."""
        params = {name: [b.data.copy() for b in blobs] for name, blobs in caffe_net.params.items()}
        self.module = CaffeModule(model, params).requires_grad_(weight_grads)
        self.blobs = Blobs(data=Blob((1, 3, 224, 224)))
        self.transformer = Transformer(mean)
        self._layer_names = [layer.name for layer in model.layer]

    def forward(self, end):
        self._input = torch.from_numpy(self.blobs["data"].data).requires_grad_(True)
        values = {"data": self._input}
        for name, bottoms, top in self.module.plan:
            values[top] = getattr(self.module, name)(*(values[b] for b in bottoms))
            if name == module_name(end):
                break
        self._output = values[top]
        for blob, value in values.items():  # every blob, as Caffe would hold it
            if blob != "data":
                self.blobs[blob].data = value.detach().numpy()
        self.blobs[end].diff = np.zeros_like(self.blobs[end].data)

    def backward(self, start):
        self._output.backward(torch.from_numpy(self.blobs[start].diff))
        self.blobs["data"].diff = self._input.grad.numpy()
