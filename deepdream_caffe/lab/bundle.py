"""Golden bundles: every intermediate of one dream, for checking other implementations.

``export-golden`` writes ``DIR/bundle.npz`` (arrays) and ``DIR/bundle.json`` (what each array
is, the parameters, tolerances and provenance); ``compare DIR OTHER.npz`` measures another
implementation's arrays, stage by stage, against it. docs/golden-bundle.md documents the
format; ``FORMAT`` is its version.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import dream

FORMAT = 1
FIXED_JITTER = (5, -3)  # (ox, oy) of the single make_step stage

# Relative-L2 tolerance per stage, and why. Measured between two correct float32
# implementations of GoogLeNet (Caffe and the PyTorch twin, same weights, same input).
TOLERANCES = {
    "data": 1e-6,  # preprocessing is a subtraction and a channel swap: exact up to rounding
    "forward": 1e-4,  # activations agree to ~1e-6; 100x margin for 30 layers of rounding
    "objective_diff": 1e-4,  # the L2 objective copies the end activations
    # Rounding flips a few max-pool choices, and the gradient takes another path there:
    # measured 1e-2 to 4e-2 with small random weights.
    "data_gradient": 5e-2,
    # One normalised step (about 1.5 per pixel) added to the image (about 100): the step's
    # gradient error shrinks by that ratio.
    "make_step": 1e-3,
    "octave_sizes": 0.0,  # integers: must be equal
    "deepdream": None,  # chaotic (docs/determinism.md): reported, never judged
}


class FixedJitter:
    """Stands in for the RNG: make_step's one ``randint`` call returns ``FIXED_JITTER``."""

    def randint(self, low, high, size):
        return np.array(FIXED_JITTER)


def forward_blobs(model, end):
    """Names of the blobs up to ``end``, in the order the net makes them (no Split copies)."""
    names = []
    for layer in model.layer:
        for top in layer.top:
            if top not in names and top != "data":
                names.append(top)
        if layer.name == end:
            break
    return names


def stages(net, model, img, params, seed) -> dict:
    """Every array of the bundle, computed on ``net`` (a pycaffe net or a twin of it)."""
    end = params.end
    arrays = {"input_image": np.float32(img)}
    src = net.blobs["data"]
    h, w = img.shape[:2]
    src.reshape(1, 3, h, w)
    src.data[0] = dream.preprocess(net, img)
    arrays["data"] = src.data[0].copy()
    net.forward(end=end)
    for name in forward_blobs(model, end):
        arrays[f"forward/{name}"] = net.blobs[name].data[0].copy()
    dream.objective_L2(net.blobs[end])
    arrays["objective_diff"] = net.blobs[end].diff[0].copy()
    net.backward(start=end)
    arrays["data_gradient"] = src.diff[0].copy()
    src.data[0] = arrays["data"]
    dream.make_step(net, step_size=params.step_size, end=end, jitter=params.jitter,
                    clip=params.clip, rng=FixedJitter())
    arrays["make_step"] = src.data[0].copy()
    from ..checks import octave_sizes

    arrays["octave_sizes"] = np.array(octave_sizes(h, w, params.octave_n, params.octave_scale))
    arrays["deepdream"] = dream.deepdream(net, img, rng=np.random.RandomState(seed),
                                          **params.as_kwargs())
    return arrays


def stage_of(key: str) -> str:
    return key.split("/")[0]


def export(out: Path, net, model, img, params, seed, provenance: dict) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    arrays = stages(net, model, img, params, seed)
    meta = {
        "format": FORMAT,
        "order": list(arrays),
        "arrays": {
            "input_image": "the input, H x W x 3, RGB, float32 0..255",
            "data": "preprocess(input): 3 x H x W, BGR, mean subtracted (notebook cell 3)",
            "forward/NAME": "blob NAME after forward(end), 1st image, as Caffe holds it: "
                            "values of a blob a ReLU modifies in place are after that ReLU, "
                            "except the end blob",
            "objective_diff": "the end blob's diff set by objective_L2",
            "data_gradient": "the data blob's diff after backward(start=end)",
            "make_step": f"the data blob after one make_step from 'data' with jitter "
                         f"(ox, oy) = {FIXED_JITTER}",
            "octave_sizes": "(H, W) of each octave, smallest first",
            "deepdream": "deepdream(input) with the parameters and seed below, float32",
        },
        "params": asdict(params), "seed": seed, "fixed_jitter": list(FIXED_JITTER),
        "tolerances_relative_l2": TOLERANCES, **provenance,
    }
    np.savez(out / "bundle.npz", **arrays)
    (out / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def measure(ref: np.ndarray, other: np.ndarray) -> dict:
    if ref.shape != other.shape:
        return {"shape": list(ref.shape), "other_shape": list(other.shape)}
    ref64, diff = ref.astype(np.float64), ref.astype(np.float64) - other
    scale = np.abs(ref64).max() or 1.0
    norm = np.linalg.norm(ref64) or 1.0
    return {"max_abs": float(np.abs(diff).max()), "relative": float(np.abs(diff).max() / scale),
            "relative_l2": float(np.linalg.norm(diff) / norm)}


def compare(bundle_dir: Path, other_path: Path) -> dict:
    """Per-array errors, the first forward blob beyond tolerance, and the verdict."""
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    ours = np.load(bundle_dir / "bundle.npz")
    other = np.load(other_path)
    rows, first, failed = [], None, False
    for key in meta["order"]:
        tol = meta["tolerances_relative_l2"][stage_of(key)] if key != "input_image" else 0.0
        if key not in other.files:
            rows.append({"array": key, "status": "missing"})
            continue
        m = measure(ours[key], other[key])
        if "shape" in m:
            ok = False
        elif tol is None:
            ok = None
        else:
            ok = m["relative_l2"] <= tol
        rows.append({"array": key, "tolerance": tol, **m,
                     "status": {True: "ok", False: "DIVERGES", None: "reported"}[ok]})
        if ok is False:
            failed = True
            if first is None and stage_of(key) in ("data", "forward"):
                first = key
    return {"bundle": str(bundle_dir), "other": str(other_path), "rows": rows,
            "first_diverging": first, "passed": not failed}


def markdown(result: dict) -> str:
    lines = [f"# compare: {result['other']} against {result['bundle']}", "",
             f"Verdict: {'PASS' if result['passed'] else 'FAIL'}; first diverging blob: "
             f"{result['first_diverging'] or 'none'}", "",
             "| array | status | relative L2 | tolerance | max abs | relative |",
             "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        if "relative_l2" in r:
            lines.append(f"| {r['array']} | {r['status']} | {r['relative_l2']:.2e} | "
                         f"{r['tolerance']} | {r['max_abs']:.3g} | {r['relative']:.2e} |")
        elif "shape" in r:
            lines.append(f"| {r['array']} | {r['status']} | shape {r['other_shape']}, "
                         f"expected {r['shape']} | {r['tolerance']} | | |")
        else:
            lines.append(f"| {r['array']} | {r['status']} | | | | |")
    return "\n".join(lines) + "\n"


def export_job(job, out: Path, size=None, say=print) -> dict:
    """``export-golden``: the bundle of one dream job (``job.input`` defaults to the notebook's
    sky, shrunk to 256x144; ``size`` (W, H) resizes the input first, bilinear)."""
    import PIL.Image

    from .. import assets, report
    from ..job import default_end, prepare, read_inputs
    from ..net import dream_model

    end = default_end(job)
    path = job.input or assets.fetch(assets.NOTEBOOK_ASSETS["sky1024px.jpg"])
    size = size or (None if job.input else (256, 144))
    (img,) = read_inputs(job, path)
    if size and img.shape[1::-1] != size:  # an 8-bit image: nothing lost in the round trip
        img = np.float32(PIL.Image.fromarray(np.uint8(img)).resize(size, PIL.Image.BILINEAR))
    run = prepare(job, end, [(img, job.octave_n)])
    provenance = {"model": run.model_name, "weights": report.file_record(run.weights),
                  "definition": report.file_record(run.definition),
                  "input": report.file_record(path), "size": list(img.shape[1::-1]),
                  "mean_bgr": list(run.mean), "channel_swap": list(run.swap),
                  "net_setup": run.net.dream_setup,
                  "environment": report.environment(with_caffe=True)}
    meta = export(out, run.net, dream_model(run.definition, end), img, run.params, run.seed,
                  provenance)
    report.stamp(out / "bundle.json", job, run, {"bundle.npz": out / "bundle.npz"})
    say(f"wrote {out / 'bundle.npz'} and {out / 'bundle.json'}")
    return meta
