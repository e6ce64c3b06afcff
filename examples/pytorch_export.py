"""Export a PyTorch DeepDream to a golden bundle's keys, for ``deepdream-caffe compare``.

Pure PyTorch and numpy: no Caffe, no deepdream-caffe. Copy this file into your project.

    import pytorch_export
    pytorch_export.export("golden/", my_module, {"conv1/7x7_s2": "conv1",
                                                 "pool1/norm1": "conv2_reduce:input", ...},
                          "mine.npz")
    # then: deepdream-caffe compare golden/ mine.npz

``module`` is any ``nn.Module`` taking a 1 x 3 x H x W tensor as Caffe's ``data`` blob holds
it (BGR, mean subtracted, 0..255 scale). ``name_map`` maps Caffe blob names (``bundle.json``
lists them under ``blobs``) to the submodule that makes them, by its dotted name in
``module.named_modules()``:

- ``"features.3"``: the submodule's output. Caffe's ReLU works in place, so a blob that a ReLU
  follows holds values *after* it (``bundle.json``: ``post_relu``). When the submodule is a
  convolution or a linear layer, its output is taken before the ReLU, so the exporter applies
  the ReLU for you. ``"features.3:relu"`` forces that, ``"features.3:raw"`` forbids it.
- ``"features.4:input"``: the (first) input of a submodule, for blobs that no module makes,
  such as a functional LRN or ``torch.cat``: take them where the next module reads them.

Each stage starts from the bundle's input to it, so that a wrong stage does not hide the
others: ``data`` is your ``preprocess`` of ``input_image``; the network runs on the bundle's
``data``; ``objective_diff`` and ``data_gradient`` come from that forward pass; the step is
taken from the bundle's ``data`` with the bundle's fixed jitter (``step_gradient`` is the
gradient there), and once more from the bundle's own ``step_gradient``
(``make_step/from_our_gradient``), which tells a wrong step from a wrong gradient.
``octave_sizes`` and the seeded ``deepdream`` follow the notebook's loop with your network
and step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F  # noqa: N812


class _Stop(Exception):
    """Raised by the end blob's hook: the forward pass stops there, as Caffe's forward(end)."""


def objective_L2(end):  # noqa: N802 (the notebook's name)
    """The notebook's objective: its gradient is the end blob itself (diff = data)."""
    return 0.5 * end.pow(2).sum()


def notebook_preprocess(img, mean_bgr):
    """dream.ipynb's preprocess: H x W x 3 RGB 0..255 -> 3 x H x W BGR minus the mean."""
    return np.float32(np.rollaxis(img, 2)[::-1]) - np.float32(mean_bgr)[:, None, None]


def notebook_step(data, gradient, step_size, mean_bgr, clip=True):
    """The update of the notebook's make_step, between backward and unroll (and its clip)."""
    data = data + step_size / gradient.abs().mean() * gradient
    if clip:
        bias = torch.as_tensor(np.float32(mean_bgr))[:, None, None]
        data = torch.maximum(torch.minimum(data, 255 - bias), -bias)
    return data


class Hooks:
    """Forward hooks that record the mapped blobs of one forward pass, as Caffe holds them."""

    def __init__(self, module, name_map, blobs_meta, end):
        modules = dict(module.named_modules())
        self.values, self.end, self.handles = {}, end, []
        for blob, target in name_map.items():
            path, _, how = target.partition(":")
            if path not in modules:
                raise KeyError(f"name_map[{blob!r}]: the module has no submodule {path!r}")
            sub = modules[path]
            meta = blobs_meta.get(blob, {})
            relu = {"relu": True, "raw": False}.get(
                how,
                meta.get("post_relu", False)
                and isinstance(sub, (torch.nn.Conv2d, torch.nn.Linear)),
            )
            if how == "input":
                self.handles.append(sub.register_forward_pre_hook(self._grab(blob, False, 0)))
            else:
                self.handles.append(sub.register_forward_hook(self._grab(blob, relu, None)))

    def _grab(self, blob, relu, input_index):
        def hook(module, inputs, output=None):
            value = inputs[input_index] if input_index is not None else output
            value = F.relu(value) if relu else value
            self.values[blob] = value.clone()  # before any later in-place change
            if blob == self.end:
                raise _Stop

        return hook

    def run(self, module, data):
        self.values.clear()
        try:
            module(data)
        except _Stop:
            pass
        if self.end not in self.values:
            raise KeyError(f"the end blob {self.end!r} was not reached: map it in name_map")
        return self.values

    def remove(self):
        for handle in self.handles:
            handle.remove()


def gradient_at(module, hooks, data, objective):
    """Forward from ``data`` to the end blob, the objective, backward: (blobs, end diff, grad)."""
    x = torch.as_tensor(data)[None].clone().requires_grad_(True)
    with torch.enable_grad():
        values = hooks.run(module, x)
        end = values[hooks.end]
        end.retain_grad()
        objective(end).backward()
    return values, end.grad[0], x.grad[0]


def make_step(module, hooks, data, jitter_xy, params, mean_bgr, objective, step, gradient=None):
    """The notebook's make_step with a given jitter: roll, gradient, step, unroll.
    Returns (new data, gradient at the rolled image). With ``gradient`` (at the rolled
    image), that one is used and the network is not run: your step from our gradient."""
    ox, oy = jitter_xy
    rolled = np.roll(np.roll(data, ox, -1), oy, -2)
    if gradient is None:
        _, _, g = gradient_at(module, hooks, rolled, objective)
    else:
        g = torch.as_tensor(gradient)
    new = step(torch.as_tensor(rolled), g, params["step_size"], mean_bgr, False)
    new = np.roll(np.roll(new.detach().numpy(), -ox, -1), -oy, -2)
    if params["clip"]:
        bias = np.float32(mean_bgr)[:, None, None]
        new = np.clip(new, -bias, 255 - bias)
    return np.float32(new), g.numpy()


def zoom(x, size):
    """scipy.ndimage.zoom(order=1) of a C x H x W array: bilinear, corners aligned."""
    t = torch.as_tensor(np.float32(x))[None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=True)[0].numpy()


def octave_sizes(h, w, octave_n, octave_scale):
    sizes = [(h, w)]
    for _ in range(octave_n - 1):
        sizes.append(tuple(int(round(s / octave_scale)) for s in sizes[-1]))
    return sizes[::-1]


def deepdream(module, hooks, data, params, seed, mean_bgr, objective, step):
    """The notebook's octave loop (cell 8) on ``data``; the jitter from RandomState(seed)."""
    rng = np.random.RandomState(seed)
    sizes = octave_sizes(*data.shape[1:], params["octave_n"], params["octave_scale"])
    octaves = [data]
    for size in sizes[-2::-1]:
        octaves.append(zoom(octaves[-1], size))
    detail = np.zeros_like(octaves[-1])
    for base in octaves[::-1]:
        detail = zoom(detail, base.shape[1:]) if detail.shape != base.shape else detail
        image = base + detail
        for _ in range(params["iter_n"]):
            jitter = rng.randint(-params["jitter"], params["jitter"] + 1, 2)
            image, _ = make_step(module, hooks, image, jitter, params, mean_bgr, objective, step)
        detail = image - base
    return np.dstack((image + np.float32(mean_bgr)[:, None, None])[::-1])


def export(
    bundle_dir,
    module,
    name_map,
    out_path,
    preprocess=None,
    objective=objective_L2,
    step=notebook_step,
    dream=True,
):
    """Compute every stage of the bundle in ``bundle_dir`` with ``module``; write ``out_path``.

    ``preprocess(img)``: your preprocessing (default: the notebook's, with the bundle's mean);
    ``objective(end) -> scalar``: what you maximise (its gradient is ``objective_diff``);
    ``step(data, gradient, step_size, mean_bgr, clip)``: your update; ``dream=False`` skips
    the full dream (reported by compare, never judged).
    """
    bundle_dir = Path(bundle_dir)
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    with np.load(bundle_dir / "bundle.npz", allow_pickle=False) as npz:
        ours = {key: npz[key] for key in ("input_image", "data", "step_gradient")}
    params, mean = meta["params"], meta["mean_bgr"]
    preprocess = preprocess or (lambda img: notebook_preprocess(img, mean))
    module = module.eval()
    hooks = Hooks(module, name_map, meta["blobs"], params["end"])
    try:
        out = {
            "input_image": ours["input_image"],
            "data": np.float32(np.asarray(preprocess(ours["input_image"]))),
        }
        values, end_diff, grad = gradient_at(module, hooks, ours["data"], objective)
        for blob, value in values.items():
            out[f"forward/{blob}"] = value.detach().numpy()[0]
        out["objective_diff"] = end_diff.numpy()
        out["data_gradient"] = grad.numpy()
        out["make_step"], out["step_gradient"] = make_step(
            module, hooks, ours["data"], meta["fixed_jitter"], params, mean, objective, step
        )
        out["make_step/from_our_gradient"], _ = make_step(
            module,
            hooks,
            ours["data"],
            meta["fixed_jitter"],
            params,
            mean,
            objective,
            step,
            gradient=ours["step_gradient"],
        )
        h, w = ours["data"].shape[1:]
        out["octave_sizes"] = np.float32(
            octave_sizes(h, w, params["octave_n"], params["octave_scale"])
        )
        if dream:
            out["deepdream"] = np.float32(
                deepdream(module, hooks, ours["data"], params, meta["seed"], mean, objective, step)
            )
    finally:
        hooks.remove()
    np.savez(out_path, **out)
    return out


if __name__ == "__main__":
    raise SystemExit("import this module and call export(); see its docstring")
