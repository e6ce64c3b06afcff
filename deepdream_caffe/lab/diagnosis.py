"""Why another implementation's arrays fail a golden bundle: the causes ``compare`` can name.

Each check tests one known mistake of DeepDream ports against the arrays themselves, and
speaks only when the mistake explains the difference (to within the stage's tolerance):

- ``data``: a per-channel affine fit of yours on ours names swapped channels (RGB for BGR),
  a scale (x256/255, /255) and mean offsets;
- ``forward/``: the first failing layer whose inputs pass is named; pooling sizes rounded
  down instead of up; LRN with alpha not divided by local_size; values taken before
  Caffe's in-place ReLU ("this blob fails but the next passes");
- gradients: a constant factor (2: an objective without the 1/2; -1: descent);
- ``make_step``: its update against ours, and the notebook's step recomputed from your own
  ``step_gradient``, which tells a wrong step from a wrong gradient;
- unknown keys: the bundle key they most likely mean.
"""

from __future__ import annotations

import difflib

import numpy as np


def relative_l2(ref, other) -> float:
    ref, other = np.asarray(ref, np.float64), np.asarray(other, np.float64)
    return float(np.linalg.norm(other - ref) / (np.linalg.norm(ref) or 1.0))


def comparable(ref, other):
    """``other`` as float64 in ``ref``'s shape (a batch of one squeezed), else None."""
    if other.dtype.kind not in "fiu":
        return None
    if other.ndim == ref.ndim + 1 and other.shape[0] == 1:
        other = other[0]
    if other.shape != ref.shape or not np.all(np.isfinite(other)):
        return None
    return other.astype(np.float64)


def diagnose(rows, ours, theirs, meta, unknown) -> list[str]:
    """Hints, most upstream first, for the failing rows of a comparison."""
    status = {r["array"]: r["status"] for r in rows}
    have = {
        k: comparable(ours[k.split("/")[0] if k.startswith("make_step") else k], theirs[k])
        for k in status
        if status[k] != "missing"
    }
    hints = unknown_keys(unknown, list(ours))
    if status.get("input_image") == "FAIL":
        hints.append(
            "input_image: yours is not the bundle's input; start from the bundle's "
            "input_image rather than reading and resizing the file yourself"
        )
    if status.get("data") == "FAIL" and have.get("data") is not None:
        hints += data_fit(ours["data"], have["data"], meta["mean_bgr"])
    hints += forward_hints(rows, ours, theirs, have, meta)
    for key in ("objective_diff", "data_gradient", "step_gradient"):
        if status.get(key) == "FAIL" and have.get(key) is not None:
            hints += factor_hint(key, ours[key], have[key], meta)
    if any(r["stage"] == "make_step" and r["status"] == "FAIL" for r in rows):
        hints += step_hints(ours, have, status, meta)
    if status.get("octave_sizes") == "FAIL" and have.get("octave_sizes") is not None:
        hints += octave_hint(ours["data"].shape[1:], have["octave_sizes"], meta["params"])
    return hints


def unknown_keys(unknown, order) -> list[str]:
    def plain(name):  # conv1/7x7_s2, conv1_7x7_s2 and conv1.7x7_s2 read the same
        return name.removeprefix("forward/").replace("/", "_").replace(".", "_")

    hints = []
    for key in unknown:
        guess = [k for k in order if plain(k) == plain(key)]
        guess += [k for k in order if plain(k).startswith(plain(key) + "_")]
        guess = guess or difflib.get_close_matches(key, order, n=1, cutoff=0.6)
        hint = f"did you mean {guess[0]}?" if guess else "no bundle key is like it"
        hints.append(f"unknown key {key!r} is not judged ({hint})")
    return hints


# --- data: preprocessing -----------------------------------------------------------------
KNOWN_SCALES = {
    256 / 255: "the image was scaled by 256 instead of 255 (e.g. x / 255 * 256)",
    1 / 255: "the net got 0..1 values; Caffe's takes 0..255 pixel values",
    255.0: "0..255 values were multiplied by 255 again",
}


def affine_fit(ours, theirs):
    """For each of your channels: (our channel, scale, offset, residual) of the best fit
    ``theirs[c] = scale * ours[j] + offset``."""
    fits = []
    for t in theirs.reshape(len(theirs), -1):
        best = None
        for j, o in enumerate(ours.reshape(len(ours), -1).astype(np.float64)):
            a, b = np.polyfit(o, t, 1) if np.ptp(o) > 0 else (0.0, t.mean())
            resid = np.linalg.norm(t - (a * o + b)) / (np.linalg.norm(t) or 1.0)
            if best is None or resid < best[3]:
                best = (j, float(a), float(b), float(resid))
        fits.append(best)
    return fits


def data_fit(ours, theirs, mean) -> list[str]:
    fits = affine_fit(ours, theirs)
    if max(f[3] for f in fits) > 1e-4:
        return [
            "data: no per-channel scale, offset or channel order explains the difference; "
            "check the resizing and that input_image is used as given"
        ]
    hints = []
    order = [f[0] for f in fits]
    if order == [2, 1, 0]:
        hints.append(
            "data: your channels are in reverse order: RGB where Caffe's net takes "
            "BGR (the notebook's preprocess reverses them: rollaxis(img, 2)[::-1])"
        )
    elif order != list(range(len(order))):
        pairs = ", ".join(f"{c} is our {j}" for c, j in enumerate(order))
        hints.append(f"data: your channels are permuted: your channel {pairs}")
    scales = [f[1] for f in fits]
    if max(abs(a - 1) for a in scales) > 1e-5:
        a = float(np.mean(scales))
        named = [why for s, why in KNOWN_SCALES.items() if abs(a / s - 1) < 1e-4]
        hints.append(f"data: yours is {a:.6g} x ours" + (f": {named[0]}" if named else ""))
    # yours = a * (x - m_j) + b, so you subtract a * m_j - b (in your scale)
    theirs_mean = [a * mean[j] - b for j, a, b, _ in fits]
    ours_mean = [mean[j] for j, _, _, _ in fits]
    pairs = zip(theirs_mean, ours_mean, fits, strict=True)
    if max(abs(m - a * o) for m, o, (_, a, _, _) in pairs) > 1e-3:
        hints.append(
            "data: your mean differs: you subtract "
            f"({', '.join(f'{m:.3f}' for m in theirs_mean)}), the notebook "
            f"({', '.join(f'{m:g}' for m in ours_mean)}), per channel in your order"
        )
    return hints


# --- forward: the network ------------------------------------------------------------------
def forward_hints(rows, ours, theirs, have, meta) -> list[str]:
    blobs, tol = meta["blobs"], meta["tolerances_relative_l2"]["forward"]
    status = {r["array"]: r["status"] for r in rows}
    keys = [r["array"] for r in rows if r["stage"] == "forward"]
    hints, located = [], False
    for i, key in enumerate(keys):
        if status[key] != "FAIL":
            continue
        name = key[len("forward/") :]
        info = blobs[name]
        bottoms = ["data" if b == "data" else f"forward/{b}" for b in info["bottom"]]
        inputs_pass = all(status.get(b) == "ok" or b == "data" for b in bottoms)
        if inputs_pass and not located:
            located = True
            hints.append(
                f"{key}: the error starts at layer {info['layer']} ({info['type']}): "
                f"its inputs pass"
            )
            if "data" in bottoms and status.get("data") == "FAIL":
                hints.append(
                    f"{key}: compute the forward blobs from the bundle's data, not "
                    "your own, to test your network alone"
                )
        hints += layer_hints(key, info, ours, theirs[key], have.get(key), tol, bottoms)
        nxt = keys[i + 1] if i + 1 < len(keys) else None
        if nxt and status[nxt] == "ok" and not any("ReLU" in h for h in hints if key in h):
            hints.append(
                f"{key} fails but the next blob, {nxt}, passes: the maths is right "
                "and this is naming; Caffe's ReLU works in place, so a blob a ReLU "
                "follows holds values after it (bundle.json: blobs, post_relu)"
            )
    return hints


def layer_hints(key, info, ours, their_raw, theirs, tol, bottoms) -> list[str]:
    ref = ours[key]
    if info["type"] == "Pooling" and theirs is None and their_raw.ndim >= 3:
        h, w = ours[bottoms[0]].shape[1:] if bottoms[0] != "data" else ours["data"].shape[1:]
        k, s, p = info["kernel_size"], info["stride"], info["pad"]
        floor = [(d + 2 * p - k) // s + 1 for d in (h, w)]
        if list(their_raw.shape[-2:]) == floor and floor != list(ref.shape[-2:]):
            return [
                f"{key}: your pooling rounds the output size down ({floor[1]}x{floor[0]}); "
                f"Caffe rounds it up ({ref.shape[-1]}x{ref.shape[-2]}): in PyTorch, "
                "ceil_mode=True"
            ]
    if theirs is None:
        return []
    if info["type"] == "LRN" and bottoms[0] != "data":
        x = ours[bottoms[0]]
        n, alpha, beta, k = info["local_size"], info["alpha"], info["beta"], info["k"]
        if relative_l2(lrn(x, n, alpha, beta, k), theirs) <= tol:
            return [
                f"{key}: your LRN does not divide alpha by local_size ({n}): Caffe "
                "computes x / (k + alpha/n * sum of squares)^beta, as PyTorch's "
                "local_response_norm does"
            ]
    relu_ref = np.maximum(ref, 0)
    if info["post_relu"] and relative_l2(ref, np.maximum(theirs, 0)) <= tol:
        return [
            f"{key}: yours holds the values before the ReLU: Caffe's in-place ReLU "
            f"overwrote this blob; take the ReLU's output (examples/pytorch_export.py: "
            f"map it as 'module:relu')"
        ]
    if not info["post_relu"] and (ref < 0).any() and relative_l2(relu_ref, theirs) <= tol:
        return [
            f"{key}: yours holds the values after a ReLU; Caffe's blob (the end blob) "
            "holds them before it"
        ]
    return []


def lrn(x, n, alpha, beta, k):
    """Caffe's across-channel LRN of a C x H x W array, with ``alpha`` as given: Caffe itself
    uses ``alpha / n``, so ``lrn(x, n, alpha / n, ...)`` is Caffe's."""
    sq = np.pad(np.float64(x) ** 2, [((n - 1) // 2, n // 2), (0, 0), (0, 0)])
    window = np.cumsum(np.concatenate([np.zeros((1, *x.shape[1:])), sq]), axis=0)
    sums = window[n:] - window[:-n]
    return x / (k + alpha * sums) ** beta


# --- gradients and the step ---------------------------------------------------------------
def scale_of(ours, theirs):
    """(k, residual) of the best fit theirs = k * ours."""
    o = np.asarray(ours, np.float64).ravel()
    t = np.asarray(theirs, np.float64).ravel()
    k = float(o @ t / (o @ o or 1.0))
    return k, float(np.linalg.norm(t - k * o) / (np.linalg.norm(k * o) or 1.0))


def factor_hint(key, ours, theirs, meta) -> list[str]:
    k, resid = scale_of(ours, theirs)
    if resid > meta["tolerances_relative_l2"][key] or abs(k - 1) < 1e-3:
        if key in ("data_gradient", "step_gradient"):
            return [
                f"{key}: no constant factor explains it; if the forward blobs pass, the "
                "backward pass differs (max-pool and LRN gradients, the ReLU mask)"
            ]
        return []
    if abs(k - 2) < 1e-3:
        return [
            f"{key}: yours is 2 x ours: your objective is |end|^2 without the 1/2; the "
            "notebook's objective_L2 sets diff = data, the gradient of 1/2 |end|^2"
        ]
    if abs(k + 1) < 1e-3:
        return [f"{key}: yours is -1 x ours: the sign is flipped (descent, not ascent)"]
    return [f"{key}: yours is {k:.4g} x ours: a constant factor in the objective"]


def notebook_step(data, gradient, meta):
    """make_step's arithmetic from the bundle's data and a gradient at the rolled image."""
    ox, oy = meta["fixed_jitter"]
    params = meta["params"]
    g = np.float32(gradient)
    x = np.roll(np.roll(data, ox, -1), oy, -2)
    x = x + params["step_size"] / np.abs(g).mean() * g
    x = np.roll(np.roll(x, -ox, -1), -oy, -2)
    if params["clip"]:
        bias = np.float32(meta["mean_bgr"])[:, None, None]
        x = np.clip(x, -bias, 255 - bias)
    return x


def step_hints(ours, have, status, meta) -> list[str]:
    """Tell a wrong step from a wrong gradient: your step from our gradient (when you sent
    it), and the notebook's step from your gradient."""
    data, tol = ours["data"], meta["tolerances_relative_l2"]["make_step"]
    update = ours["make_step"] - data
    hints = []
    isolated = status.get("make_step/from_our_gradient")
    if isolated == "ok":
        hints.append(
            "make_step: from our step_gradient your step gives ours, so your step is "
            "right and your gradient is what differs"
        )
    elif isolated == "FAIL":
        hints.append(
            "make_step: your step fails even from our step_gradient: its arithmetic "
            "differs (roll and unroll, step_size / mean(|g|), clip)"
        )
    if have.get("make_step") is None:
        return hints
    k, resid = scale_of(update, have["make_step"] - data)
    if resid <= tol and abs(k - 1) > 1e-3:
        hints.append(
            f"make_step: your update is {k:.4g} x ours: the notebook's is "
            f"step_size / mean(|g|) * g with step_size {meta['params']['step_size']}"
        )
    g = have.get("step_gradient")
    if g is not None and np.abs(g).mean() > 0 and status.get("make_step") == "FAIL":
        expected = notebook_step(data, g, meta)
        err = float(np.linalg.norm(have["make_step"] - expected) / np.linalg.norm(update))
        if err <= tol:
            hints.append(
                "make_step: the notebook's step from your own step_gradient gives "
                "your make_step: your step arithmetic is right, and its error comes "
                "from the gradient"
            )
        else:
            hints.append(
                f"make_step: the notebook's step from your own step_gradient is "
                f"{err:.2e} (relative to the update) from your make_step: your step "
                "arithmetic differs (roll and unroll, step_size / mean(|g|), clip)"
            )
    return hints


def octave_hint(hw, theirs, params) -> list[str]:
    sizes = [tuple(hw)]
    for _ in range(params["octave_n"] - 1):
        sizes.append(tuple(int(s / params["octave_scale"]) for s in sizes[-1]))
    if np.array_equal(np.array(sizes[::-1], np.float64), theirs):
        return [
            "octave_sizes: yours are rounded down; scipy.ndimage.zoom rounds "
            "size / octave_scale to the nearest integer"
        ]
    return []
