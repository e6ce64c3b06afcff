"""Golden bundles: every intermediate of one dream, for checking other implementations.

``export-golden`` writes a self-contained folder: ``bundle.npz`` (the arrays of every stage),
``weights.npz`` (the net's parameters by Caffe layer name and index, so that no other project
needs pycaffe), ``net.prototxt`` (the definition as the dream ran it) and ``bundle.json`` (what
each array and blob is, the parameters, tolerances, provenance, and the sha256 of every file,
by relative path). ``compare DIR OTHER.npz`` judges another implementation's arrays stage by
stage and says why they fail, where it can tell (:mod:`.diagnosis`). docs/golden-bundle.md
documents the format; ``FORMAT`` is its version.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np

from .. import dream, models
from ..errors import DreamError
from ..params import DreamParams
from . import diagnosis

FORMAT = 2
FIXED_JITTER = (5, -3)  # (ox, oy) of the single make_step stage
FILES = ("bundle.npz", "weights.npz", "net.prototxt")
# An optional key of a submission: your step applied to our data and our step_gradient,
# judged against our make_step, so that a wrong step is told from a wrong gradient.
STEP_FROM_OUR_GRADIENT = "make_step/from_our_gradient"

# The stages, in the order a dream computes them; each is computed from our previous stage.
STAGES = (
    "input_image",
    "data",
    "forward",
    "objective_diff",
    "data_gradient",
    "step_gradient",
    "make_step",
    "octave_sizes",
    "deepdream",
)

# Relative-L2 tolerance per stage; make_step is judged on its update (make_step - data), so
# that one number serves every stage from the gradient on. Calibrated between Caffe and the
# PyTorch twin (same weights, same input) on both GoogLeNets at three sizes: the measured
# spread is tabled in docs/golden-bundle.md, and each tolerance is several times its largest.
TOLERANCES = {
    "input_image": 0.0,  # your input as given: must be equal
    "data": 1e-6,  # a subtraction and a channel swap: equal up to float32 rounding
    "forward": 1e-4,  # measured <= 8e-7: a 100x margin for rounding through 30 layers
    "objective_diff": 1e-4,  # the L2 objective copies the end blob: as forward
    # Rounding flips a few max-pool choices, and the gradient takes another path there:
    # see the spread table; a wrong formula is far beyond (a factor of 2 gives 1).
    "data_gradient": 5e-2,
    "step_gradient": 5e-2,  # the same gradient at the jittered image
    "make_step": 5e-2,  # its update is the normalised gradient: the gradient's tolerance
    "octave_sizes": 0.0,  # integers: must be equal
    "deepdream": None,  # chaotic (docs/determinism.md): reported, never judged
}


class FixedJitter:
    """Stands in for the RNG: make_step's one ``randint`` call returns ``FIXED_JITTER``."""

    def randint(self, low, high, size):
        return np.array(FIXED_JITTER)


def stage_of(key: str) -> str:
    return key.split("/")[0]


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


def blob_records(model, end) -> dict:
    """For each forward blob: the layer making it, its type, inputs, parameters, and whether
    an in-place ReLU changed it (Caffe's blob then holds the values after the ReLU)."""
    makers, relu = {}, set()
    for layer in model.layer:
        if layer.type == "ReLU" and list(layer.top) == list(layer.bottom):
            relu.update(layer.top)
        for top in layer.top:
            if top not in layer.bottom:
                makers.setdefault(top, layer)
    records = {}
    for name in forward_blobs(model, end):
        layer = makers[name]
        records[name] = {
            "layer": layer.name,
            "type": layer.type,
            "bottom": list(layer.bottom),
            "post_relu": name in relu,
            **layer_params(layer),
        }
    return records


def layer_params(layer) -> dict:
    if layer.type == "LRN":
        p = layer.lrn_param
        return {"local_size": p.local_size, "alpha": p.alpha, "beta": p.beta, "k": p.k}
    if layer.type == "Pooling":
        p = layer.pooling_param
        return {
            "pool": "MAX" if p.pool == p.MAX else "AVE",
            "kernel_size": p.kernel_size,
            "stride": p.stride,
            "pad": p.pad,
        }
    if layer.type == "Convolution":
        p = layer.convolution_param
        return {
            "num_output": p.num_output,
            "kernel_size": list(p.kernel_size),
            "stride": list(p.stride) or [1],
            "pad": list(p.pad) or [0],
            "group": p.group,
        }
    return {}


def stages(net, model, img, params, seed, objective=dream.objective_L2) -> dict:
    """Every array of the bundle, computed on ``net`` (a pycaffe net or a twin of it).

    ``objective`` is the L2 objective, or the same checked against non-finite values
    (``job.Run.objective``): the numbers are the same."""
    from ..checks import octave_sizes

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
    objective(net.blobs[end])
    arrays["objective_diff"] = net.blobs[end].diff[0].copy()
    net.backward(start=end)
    arrays["data_gradient"] = src.diff[0].copy()
    src.data[0] = arrays["data"]
    dream.make_step(
        net,
        step_size=params.step_size,
        end=end,
        jitter=params.jitter,
        clip=params.clip,
        objective=objective,
        rng=FixedJitter(),
    )
    arrays["step_gradient"] = src.diff[0].copy()  # backward ran on the rolled image
    arrays["make_step"] = src.data[0].copy()
    arrays["octave_sizes"] = np.float32(octave_sizes(h, w, params.octave_n, params.octave_scale))
    arrays["deepdream"] = np.float32(
        dream.deepdream(
            net, img, rng=np.random.RandomState(seed), objective=objective, **params.as_kwargs()
        )
    )
    return arrays


DESCRIPTIONS = {
    "input_image": "the input, H x W x 3, RGB, 0..255",
    "data": "preprocess(input): 3 x H x W, BGR, mean subtracted (notebook cell 3)",
    "forward/NAME": "blob NAME after forward(end) from 'data', as Caffe holds it: a blob an "
    "in-place ReLU follows holds values after it (blobs: post_relu), except "
    "the end blob",
    "objective_diff": "the end blob's diff set by objective_L2 (the gradient of 1/2 |end|^2)",
    "data_gradient": "the data blob's diff after backward(start=end)",
    "step_gradient": f"the data blob's diff inside make_step: the gradient at 'data' rolled "
    f"by the fixed jitter (ox, oy) = {FIXED_JITTER}, in rolled coordinates",
    "make_step": f"the data blob after one make_step from 'data' with jitter (ox, oy) = "
    f"{FIXED_JITTER}; judged on its update, make_step - data",
    "octave_sizes": "(H, W) of each octave, smallest first",
    "deepdream": "deepdream(input) with the parameters and seed below; reported, not judged",
}


def export(
    out: Path, net, model, img, params, seed, provenance: dict, objective=dream.objective_L2
) -> dict:
    """Write the bundle of ``img`` into the folder ``out``, all files or none."""
    arrays, weights = computed(net, model, img, params, seed, objective)
    return write(out, arrays, weights, model, params, seed, provenance)


def computed(net, model, img, params, seed, objective=dream.objective_L2) -> tuple:
    """The bundle's arrays (:func:`stages`) and the model's weights, by name: those of the
    layers of ``model``, whichever set-up the net has (not the fast net's added Scale)."""
    arrays = stages(net, model, img, params, seed, objective)
    layers = {layer.name for layer in model.layer}
    weights = {
        f"{layer}/{i}": blob.data.copy()
        for layer, blobs in net.params.items()
        if layer in layers
        for i, blob in enumerate(blobs)
    }
    return arrays, weights


def write(out: Path, arrays, weights, model, params, seed, provenance: dict) -> dict:
    """Write a bundle's files into the folder ``out``, all or none."""
    from ..imageio import all_or_nothing, umask
    from ..sidecar import file_record

    meta = {
        "format": FORMAT,
        "order": list(arrays),
        "arrays": DESCRIPTIONS,
        "blobs": blob_records(model, params.end),
        "weights": {
            key: {
                "layer": key.rpartition("/")[0],
                "index": int(key.rpartition("/")[2]),
                "role": "weights" if key.endswith("/0") else "bias",
                "shape": list(w.shape),
            }
            for key, w in weights.items()
        },
        "params": asdict(params),
        "seed": seed,
        "fixed_jitter": list(FIXED_JITTER),
        "tolerances_relative_l2": TOLERANCES,
        **provenance,
    }
    out.mkdir(parents=True, exist_ok=True)
    with all_or_nothing() as batch:
        tmp = {name: batch(out / name) for name in (*FILES, "bundle.json")}
        with open(tmp["bundle.npz"], "wb") as f:
            np.savez(f, **arrays)
        with open(tmp["weights.npz"], "wb") as f:
            np.savez(f, **weights)
        tmp["net.prototxt"].write_text(str(model))
        meta["files"] = {
            name: {k: v for k, v in file_record(tmp[name]).items() if k != "path"} for name in FILES
        }
        tmp["bundle.json"].write_text(json.dumps(meta, indent=2) + "\n")
        for path in tmp.values():  # a bundle is for sharing: the umask's usual file mode
            path.chmod(0o666 & ~umask())
    return meta


# --- reading: the bundle (ours) and the submission (theirs) ------------------------------
def load_bundle(folder: Path) -> tuple[dict, dict]:
    """bundle.json and bundle.npz of a bundle folder, checked: format, hashes, keys."""
    from ..assets import file_hash

    fix = "export it again with `deepdream-caffe export-golden`"
    path = folder / "bundle.json"
    if not path.is_file():
        raise DreamError(f"{path} does not exist", "pass a folder written by export-golden")
    try:
        meta = json.loads(path.read_text(), parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise DreamError(f"{path} is not valid JSON ({one_line(e)})", fix) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise DreamError(
            f"{path} is bundle format {_short(found)}; this deepdream-caffe reads format {FORMAT}",
            fix,
        )
    check_meta(meta, path)
    for name, record in meta["files"].items():
        target = folder / name  # one of FILES: check_meta allows no other name
        if not target.is_file() or file_hash(target, "sha256") != record["sha256"]:
            raise DreamError(f"{target} is missing or does not match its sha256 in {path}", fix)
    arrays = read_npz(folder / "bundle.npz")
    if list(arrays) != meta["order"]:
        raise DreamError(f"{folder / 'bundle.npz'} does not hold the keys {path} lists", fix)
    sizes = arrays.get("octave_sizes")
    if sizes is not None and (sizes.ndim != 2 or len(sizes) != meta["params"]["octave_n"]):
        raise DreamError(f"{path}'s params.octave_n does not match its octave_sizes", fix)
    return meta, arrays


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def one_line(error) -> str:
    return " ".join(str(error).split())[:200]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_meta(meta: dict, path: Path) -> None:
    """bundle.json, read back, is untrusted: the type and range of every field that compare
    reads, and file names that stay inside the bundle's folder. DreamError if not."""
    from ..params import check_problem
    from ..sidecar import plain_text

    def bad(field, value):
        return DreamError(
            f"{path}: its field {field} is not valid ({_short(value)})",
            "export the bundle again with `deepdream-caffe export-golden`",
        )

    def number(field, name, value, integer=False):
        if check_problem(name, value) or (integer and not isinstance(value, int)):
            raise bad(field, value)

    files = meta.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(FILES):
        raise bad("files", files)
    for name, record in files.items():
        digest = record.get("sha256") if isinstance(record, dict) else None
        if not (
            isinstance(digest, str) and len(digest) == 64 and set(digest) <= set("0123456789abcdef")
        ):
            raise bad(f"files.{name}", record)
    order = meta.get("order")
    if not (
        isinstance(order, list)
        and all(plain_text(k) for k in order)
        and len(set(order)) == len(order)
        and all(stage_of(k) in STAGES for k in order)
    ):
        raise bad("order", order)
    tolerances = meta.get("tolerances_relative_l2")
    if not isinstance(tolerances, dict) or not set(STAGES) <= set(tolerances):
        raise bad("tolerances_relative_l2", tolerances)
    for stage in STAGES:
        tol = tolerances[stage]
        if tol is not None and check_problem("tolerance", tol):
            raise bad(f"tolerances_relative_l2.{stage}", tol)
    params = meta.get("params")
    if not isinstance(params, dict) or set(params) != set(DreamParams.__dataclass_fields__):
        raise bad("params", params)
    for name in ("iter_n", "octave_n", "jitter"):
        number(f"params.{name}", name, params[name], integer=True)
    for name in ("octave_scale", "step_size"):
        number(f"params.{name}", name, params[name])
    if not isinstance(params["clip"], bool) or not plain_text(params["end"]):
        raise bad("params", params)
    mean = meta.get("mean_bgr")
    if not isinstance(mean, list) or len(mean) != 3:
        raise bad("mean_bgr", mean)
    for v in mean:
        number("mean_bgr", "mean", v)
    jitter = meta.get("fixed_jitter")
    if not (isinstance(jitter, list) and len(jitter) == 2):
        raise bad("fixed_jitter", jitter)
    for v in jitter:
        if not isinstance(v, int) or isinstance(v, bool) or abs(v) > params["jitter"]:
            raise bad("fixed_jitter", jitter)
    blobs = meta.get("blobs")
    if not isinstance(blobs, dict):
        raise bad("blobs", blobs)
    for name, info in blobs.items():
        if not (
            isinstance(info, dict)
            and all(plain_text(info.get(k)) for k in ("layer", "type"))
            and isinstance(info.get("bottom"), list)
            and all(plain_text(b) for b in info["bottom"])
        ):
            raise bad(f"blobs.{_short(name)}", info)
    for key in order:  # every forward key names a blob the hints can look up
        if stage_of(key) == "forward" and key[len("forward/") :] not in blobs:
            raise bad("order", key)


def read_npz(path: Path) -> dict:
    """Every array of an ``.npz``, read without pickle; one clear error for anything else."""
    fix = "save your arrays with numpy: np.savez(path, **{key: float32 array})"
    if not path.is_file():
        raise DreamError(f"{path} does not exist", "check the path")
    with open(path, "rb") as f:
        try:
            loaded = np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise DreamError(f"{path} is not a numpy .npz file ({e})", fix) from None
        if isinstance(loaded, np.ndarray):
            raise DreamError(
                f"{path} is a .npy file holding one array; compare needs an "
                ".npz holding the bundle's keys",
                fix,
            )
        arrays = {}
        for key in loaded.files:
            try:
                arrays[key] = loaded[key]
            except ValueError:
                raise DreamError(
                    f"{path}: array {key!r} holds Python objects, which compare "
                    "does not load (no pickle)",
                    fix,
                ) from None
            except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
                raise DreamError(f"{path}: array {key!r} cannot be read ({e})", fix) from None
    if not arrays:
        raise DreamError(f"{path} holds no arrays", fix)
    return arrays


# --- judging -----------------------------------------------------------------------------
def as_comparable(ref: np.ndarray, other: np.ndarray):
    """``other`` as float64 in ``ref``'s shape, or the reason it is not comparable."""
    notes = []
    if other.dtype.kind not in "fiu":
        return None, [f"dtype {other.dtype} is not a real number type"]
    if other.ndim == ref.ndim + 1 and other.shape[0] == 1:
        other = other[0]
        notes.append("batch dimension squeezed")
    if other.shape != ref.shape:
        return None, notes + [f"shape {list(other.shape)}, expected {list(ref.shape)}"]
    other = other.astype(np.float64)
    bad = int(np.size(other) - np.count_nonzero(np.isfinite(other)))
    if bad:
        return None, notes + [f"{bad} non-finite value(s) (NaN or infinity)"]
    return other, notes


def measure(ref: np.ndarray, other: np.ndarray, base: np.ndarray | None = None) -> dict:
    """Largest absolute difference, that over ours' largest magnitude, and the relative L2
    error; with ``base``, both are relative to ``ref - base`` (an update's size)."""
    ref64 = ref.astype(np.float64)
    diff = other - ref64
    size = ref64 - base if base is not None else ref64
    scale = np.abs(size).max() or 1.0
    norm = np.linalg.norm(size) or 1.0
    max_abs = float(np.abs(diff).max()) if diff.size else 0.0
    return {
        "max_abs": max_abs,
        "relative": max_abs / scale,
        "relative_l2": float(np.linalg.norm(diff) / norm),
    }


def judge(key, ref, other, meta, ours) -> dict:
    stage = stage_of(key)
    tol = meta["tolerances_relative_l2"][stage]
    row = {"array": key, "stage": stage, "tolerance": tol}
    values, notes = as_comparable(ref, other)
    row["notes"] = notes
    if values is None:
        return {**row, "status": "FAIL"}
    row.update(measure(ref, values, ours["data"] if stage == "make_step" else None))
    if tol is None:
        row["status"] = "reported"
    else:
        row["status"] = "ok" if row["relative_l2"] <= tol else "FAIL"
    return row


def required_keys(order: list, patterns: list[str]) -> list:
    """The bundle keys ``--require`` names: keys, stages, or shell patterns (``forward/*``)."""
    wanted = []
    for pattern in patterns:
        hits = [k for k in order if fnmatch.fnmatchcase(k, pattern) or stage_of(k) == pattern]
        if not hits:
            raise DreamError(
                f"--require {pattern!r} names no key of the bundle",
                "use keys or stages from bundle.json's order, e.g. data,forward/*,make_step",
            )
        wanted += [k for k in hits if k not in wanted]
    return wanted


def check_report(report: Path, bundle_dir: Path, other: Path) -> None:
    """The report of compare never replaces what it compares: the arrays or a bundle file."""
    if report.is_dir():
        raise DreamError(f"--report {report} is a folder", "give a file name, e.g. report.md")
    inputs = [other, *(bundle_dir.rglob("*") if bundle_dir.is_dir() else [])]
    if report.exists() and any(p.exists() and report.samefile(p) for p in inputs):
        raise DreamError(
            f"--report {report} is one of the files compare reads", "write the report elsewhere"
        )


def compare(bundle_dir: Path, other_path: Path, require=()) -> dict:
    """Judge every key of ``other_path`` against the bundle; name causes where possible."""
    meta, ours = load_bundle(bundle_dir)
    theirs = read_npz(other_path)
    required = required_keys(meta["order"], list(require))
    rows = []
    for key in meta["order"]:
        if key not in theirs:
            rows.append({"array": key, "stage": stage_of(key), "status": "missing", "notes": []})
            continue
        rows.append(judge(key, ours[key], theirs[key], meta, ours))
        if key == "make_step" and STEP_FROM_OUR_GRADIENT in theirs:
            rows.append(
                judge(STEP_FROM_OUR_GRADIENT, ours[key], theirs[STEP_FROM_OUR_GRADIENT], meta, ours)
            )
    unknown = [k for k in theirs if k not in ours and k != STEP_FROM_OUR_GRADIENT]
    judged = [r for r in rows if r["status"] in ("ok", "FAIL") and r["stage"] != "input_image"]
    failing = [r for r in rows if r["status"] == "FAIL"]
    missing_required = [k for k in required if k not in theirs]
    stage_table = {}
    for stage in STAGES:
        mine = [r for r in rows if r["stage"] == stage]
        bad = [r for r in mine if r["status"] == "FAIL"]
        done = [r for r in mine if r["status"] in ("ok", "FAIL")]
        stage_table[stage] = {
            "verdict": "FAIL"
            if bad
            else "ok"
            if done
            else "reported"
            if any(r["status"] == "reported" for r in mine)
            else "missing",
            "first_failing": bad[0]["array"] if bad else None,
            "judged": len(done),
            "keys": len(mine),
        }
    hints = diagnosis.diagnose(rows, ours, theirs, meta, unknown)
    return {
        "bundle": str(bundle_dir),
        "other": str(other_path),
        "rows": rows,
        "stages": stage_table,
        "hints": hints,
        "first_failing": failing[0]["array"] if failing else None,
        "first_failing_stage": failing[0]["stage"] if failing else None,
        "judged": len(judged),
        "missing": [r["array"] for r in rows if r["status"] == "missing"],
        "unknown": unknown,
        "required_missing": missing_required,
        "passed": bool(judged) and not failing and not missing_required,
    }


def verdict_line(result: dict) -> tuple[str, str] | None:
    """(problem, fix) for a failed comparison, or None when it passed."""
    other = result["other"]
    if result["first_failing"]:
        others = [
            s
            for s, v in result["stages"].items()
            if v["verdict"] == "FAIL" and s != result["first_failing_stage"]
        ]
        also = f"; also failing: {', '.join(others)}" if others else ""
        return (
            f"{other} diverges from the bundle: first failing stage "
            f"{result['first_failing_stage']} (at {result['first_failing']}){also}",
            "see the diagnosis above",
        )
    if not result["judged"]:
        unknown = result["unknown"]
        what = f" ({len(unknown)} unknown key(s): {', '.join(unknown[:5])})" if unknown else ""
        return (
            f"{other} holds no array the bundle can judge{what}",
            "name your arrays as bundle.json's order lists them, e.g. data, "
            "forward/conv1/7x7_s2, data_gradient (docs/golden-bundle.md)",
        )
    if result["required_missing"]:
        missing = result["required_missing"]
        return (
            f"{other} lacks {len(missing)} required key(s): {', '.join(missing[:5])}",
            "export them, or drop them from --require",
        )
    return None


def markdown(result: dict) -> str:
    s = result["stages"]
    lines = [
        f"# compare: {result['other']} against {result['bundle']}",
        "",
        f"Verdict: {'PASS' if result['passed'] else 'FAIL'}; first failing stage: "
        f"{result['first_failing_stage'] or 'none'}"
        + (f" (at {result['first_failing']})" if result["first_failing"] else ""),
        "",
        f"Keys: {result['judged']} judged, "
        f"{sum(r['status'] == 'FAIL' for r in result['rows'])} failing, "
        f"{len(result['missing'])} missing, {len(result['unknown'])} unknown"
        + (f" ({', '.join(result['unknown'])})" if result["unknown"] else "")
        + (
            f"; required but missing: {', '.join(result['required_missing'])}"
            if result["required_missing"]
            else ""
        ),
        "",
        "| stage | verdict | first failing key | keys judged |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {name} | {v['verdict']} | {v['first_failing'] or ''} | {v['judged']} of {v['keys']} |"
        for name, v in s.items()
    ]
    if result["hints"]:
        lines += ["", "## Diagnosis", ""] + [f"- {h}" for h in result["hints"]]
    lines += [
        "",
        "## Arrays",
        "",
        "| array | status | relative L2 | tolerance | max abs | relative | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        note = "; ".join(r["notes"])
        if "relative_l2" in r:
            lines.append(
                f"| {r['array']} | {r['status']} | {r['relative_l2']:.2e} | "
                f"{r['tolerance']} | {r['max_abs']:.3g} | {r['relative']:.2e} | "
                f"{note} |"
            )
        else:
            lines.append(
                f"| {r['array']} | {r['status']} | | {r.get('tolerance', '')} | | | {note} |"
            )
    return "\n".join(lines) + "\n"


# --- export-golden -----------------------------------------------------------------------
def weights_kind(job) -> str:
    """published (checksum verified), or user: what ``bundle.json`` says of the weights."""
    from .. import assets

    published = "published (verified by checksum)"
    if job.model_def:
        return "user"
    if not job.weights:
        return published  # model_files fetched and verified them
    record = models.get_model(job.model)
    if not record.archive_weights and assets.matches(Path(job.weights), record.weights):
        return published
    return "user"


def export_job(job, out: Path, size=None, say=print, kind=None) -> dict:
    """``export-golden``: the bundle of one dream job (``job.input`` defaults to the notebook's
    sky, shrunk to 256x144; ``size`` (W, H) resizes the input first, bilinear). ``kind`` says
    what the weights are (default: published or user). The net is built and run in a child
    process; this one writes the files."""
    import PIL.Image

    from .. import assets, environment, interrupts, noise, sidecar, worker
    from ..definition import prune
    from ..imageio import load_image, read_bytes
    from ..job import check_numbers, default_end, start
    from ..plan import check_input, make_plan

    check_numbers(job)
    end = default_end(job)
    path = job.input or assets.fetch(assets.NOTEBOOK_ASSETS["sky1024px.jpg"])
    size = size or (None if job.input else (256, 144))
    read = {}
    if noise.is_noise(path):  # drawn once the seed is known; --size is its own
        if size:
            raise DreamError("--size does not apply to noise:WxH", "give the size in noise:WxH")
        img, shape = None, noise.size(path)
    else:  # read once: decoded and recorded from the same bytes
        data = read_bytes(path)
        read = {str(path): sidecar.bytes_record(path, data)}
        img = load_image(path, max_size=job.max_size, data=data)
        if size and img.shape[1::-1] != tuple(size):  # an 8-bit image: nothing lost in the trip
            img = np.float32(PIL.Image.fromarray(np.uint8(img)).resize(size, PIL.Image.BILINEAR))
        shape = img.shape[:2]
    plan = make_plan(job, end, [(*shape, job.params.octave_n)], say=say)
    try:
        run = start(job, plan, say)
        if img is None:
            # the bundle's input: its jitter starts from RandomState(seed), as every bundle's
            img = np.float32(noise.image(path, np.random.RandomState(run.seed)))
        check_input(plan, img, str(path))
        model = prune(plan.model(), end)
        setup = []
        arrays, weights = worker.run(
            _bundle_in_caffe, plan, model, img, run.seed, on_message=setup.append
        )
    finally:
        plan.close()
    run = dataclasses.replace(run, inputs=read)  # the input as decoded, for bundle.json's run
    # the files as they were read, not as they may be now
    source = {
        "input": noise.record(path)
        if noise.is_noise(path)
        else {**read[str(path)], "path": str(Path(path).resolve())},
        "definition": {**plan.definition_read, "path": str(plan.definition_path.resolve())},
    }
    source["weights"] = {**plan.weights.record(), "path": str(plan.weights.path.resolve())}
    del source["weights"]["provenance"]
    provenance = {
        "model": plan.model_name,
        "weights_kind": kind or weights_kind(job),
        "source": source,
        "size": list(img.shape[1::-1]),
        "mean_bgr": list(plan.mean),
        "channel_swap": list(plan.swap),
        "net_setup": setup[0][1],
        "environment": environment.environment(with_caffe=True),
    }
    with interrupts.held():  # a signal waits until bundle.json holds this run's record too
        meta = write(out, arrays, weights, model, plan.params, run.seed, provenance)
        sidecar.stamp(out / "bundle.json", job, run, {f: out / f for f in FILES})
    say(f"wrote {', '.join(str(out / f) for f in (*FILES, 'bundle.json'))}")
    return meta


def _bundle_in_caffe(send, plan, model, img, seed) -> tuple:
    """The Caffe part of export-golden: the bundle's arrays and weights."""
    from .. import guards
    from ..job import open_net

    net = open_net(send, plan)
    objective = guards.guarded(net, dream.objective_L2, plan.pooled, plan.end)
    return computed(net, model, img, plan.params, seed, objective)
