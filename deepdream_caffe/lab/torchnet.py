"""A PyTorch (CPU) twin of a pruned Caffe net, for the benchmark's baseline only.

It reads the same prototxt and the same weights, and offers the few things the notebook's
code touches on a pycaffe net (``blobs[name].data/.diff``, ``forward(end)``,
``backward(start)``, ``transformer.mean``), so :func:`deepdream_caffe.dream.deepdream` runs
on it unchanged and only forward/backward differ. Layers: Input, Convolution, ReLU, Pooling
(Caffe's ceil rounding), LRN, Concat, Dropout (test phase: identity), InnerProduct, Softmax.
Its numbers agree with Caffe's to float32 rounding, not bit for bit; it is never used to dream.
"""

from __future__ import annotations

import numpy as np


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
    def __init__(self, mean):
        self.mean = {"data": np.float32(mean)[:, None, None]}


class TorchNet:
    def __init__(self, model, caffe_net, mean, weight_grads=False):
        """``model``: the pruned NetParameter; ``caffe_net``: a pycaffe net with its weights."""
        import torch

        self.torch = torch
        self.layers = [layer for layer in model.layer if layer.type != "Input"]
        self.params = {
            name: [torch.from_numpy(b.data.copy()).requires_grad_(weight_grads) for b in blobs]
            for name, blobs in caffe_net.params.items()}
        self.blobs = Blobs(data=Blob((1, 3, 224, 224)))
        self.transformer = Transformer(mean)
        self._layer_names = [layer.name for layer in model.layer]

    def forward(self, end):
        torch = self.torch
        self._input = torch.from_numpy(self.blobs["data"].data).requires_grad_(True)
        values = {"data": self._input}
        for layer in self.layers:
            out = self._run(layer, [values[b] for b in layer.bottom])
            values[layer.top[0]] = out
            if layer.name == end:
                break
        self._output = out
        for name, value in values.items():  # every blob, as Caffe would hold it
            if name != "data":
                self.blobs[name].data = value.detach().numpy()
        self.blobs[end].diff = np.zeros_like(self.blobs[end].data)

    def backward(self, start):
        self._output.backward(self.torch.from_numpy(self.blobs[start].diff))
        self.blobs["data"].diff = self._input.grad.numpy()

    def _run(self, layer, x):
        F = self.torch.nn.functional  # noqa: N806
        kind = layer.type
        if kind == "Convolution":
            p = layer.convolution_param
            w = self.params[layer.name]
            return F.conv2d(x[0], w[0], w[1] if len(w) > 1 else None,
                            stride=p.stride[0] if p.stride else 1,
                            padding=p.pad[0] if p.pad else 0, groups=p.group)
        if kind == "ReLU":
            return F.relu(x[0])
        if kind == "Pooling":
            p = layer.pooling_param
            if p.pool == p.MAX:
                return F.max_pool2d(x[0], p.kernel_size, p.stride, p.pad, ceil_mode=True)
            assert p.pad == 0, "padded average pooling is not supported"
            return F.avg_pool2d(x[0], p.kernel_size, p.stride, ceil_mode=True)
        if kind == "LRN":
            p = layer.lrn_param
            return F.local_response_norm(x[0], p.local_size, p.alpha, p.beta, p.k)
        if kind == "Concat":
            return self.torch.cat(x, 1)
        if kind == "Dropout":
            return x[0]
        if kind == "InnerProduct":
            w = self.params[layer.name]
            return F.linear(x[0].flatten(1), w[0], w[1] if len(w) > 1 else None)
        if kind == "Softmax":
            return F.softmax(x[0], 1)
        raise ValueError(f"layer type {kind} is not supported by the PyTorch baseline")
