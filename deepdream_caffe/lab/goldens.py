"""Golden outputs: seeded dreams on synthetic weights, kept in ``reference_images/``.

Each case is a dream of the notebook's sky (shrunk to 128x72, so the suite stays fast) on a
real architecture filled with seeded synthetic weights. ``make goldens`` recomputes them all,
says what changed and replaces the stored ones; tests/test_goldens.py recomputes them and
compares. Both run under ``PINNED_ENV``: the OpenBLAS thread count and kernel change bits
(docs/determinism.md), so goldens are made with one thread and the Haswell kernels, which
every x86-64 CPU with AVX2 runs.

Stored per case: ``NAME.npy`` (the float32 result before any 8-bit cast), ``NAME.png`` (to look
at) and ``NAME.json`` (every parameter, the seed, the weight recipe and checksum, the Caffe
source, BLAS, and package versions). Goldens are made by the code they test, so ``make
goldens`` also runs the notebook's own code cells on the notebook's net (force_backward:
``load_net(notebook_net=True)``, as tests/test_dream.py loads it) for every case and stores
their agreement in the manifest (``notebook_agreement``: "bit-identical" or the largest
difference); tests/test_verify.py checks that every manifest says bit-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PINNED_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OPENBLAS_CORETYPE": "Haswell",
    "OMP_NUM_THREADS": "1",
    "GLOG_minloglevel": "2",
}
SKY_SIZE = (128, 72)  # the sky, shrunk: a 4-octave dream in about a second
FLOWERS_SIZE = (80, 60)
SMALL_NET = """name: "small"
layer { name: "data" type: "Input" top: "data"
        input_param { shape { dim: 1 dim: 3 dim: 64 dim: 64 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 16 kernel_size: 5 pad: 2 stride: 2 } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
        pooling_param { pool: MAX kernel_size: 3 stride: 2 } }
layer { name: "norm1" type: "LRN" bottom: "pool1" top: "norm1"
        lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
        convolution_param { num_output: 32 kernel_size: 3 pad: 1 } }
"""


@dataclass(frozen=True)
class Case:
    name: str
    model: str  # bvlc_googlenet, places205_googlenet or small_net (bring your own)
    end: str
    params: dict = field(default_factory=dict)  # DreamParams overrides
    guide: bool = False
    zoom_frames: int = 0
    seed: int = 0


CASES = [
    Case("bvlc_googlenet_l2_4c", "bvlc_googlenet", "inception_4c/output"),
    Case("bvlc_googlenet_prerelu_3b_5x5_reduce", "bvlc_googlenet", "inception_3b/5x5_reduce"),
    Case("bvlc_googlenet_guided_3b", "bvlc_googlenet", "inception_3b/output", guide=True),
    Case(
        "bvlc_googlenet_zoom_3_frames",
        "bvlc_googlenet",
        "inception_4c/output",
        params=dict(iter_n=5, octave_n=2),
        zoom_frames=3,
    ),
    Case("places205_googlenet_l2_4c", "places205_googlenet", "inception_4c/output", seed=1),
    Case("small_net_byo_conv2", "small_net", "conv2", seed=2),
]
WEIGHT_SEEDS = {"bvlc_googlenet": 0, "places205_googlenet": 1, "small_net": 2}


def avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def pinned() -> bool:
    return all(os.environ.get(k) == v for k, v in PINNED_ENV.items())


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def net_files(model: str, folder: Path) -> tuple[Path, Path]:
    """Definition and seeded synthetic weights of ``model``, written into ``folder``."""
    from ..build import caffe_source_dir
    from .synthetic import write_googlenet, write_synthetic_weights

    folder.mkdir(parents=True, exist_ok=True)
    if model == "bvlc_googlenet":
        definition = caffe_source_dir() / "models" / "bvlc_googlenet" / "deploy.prototxt"
    elif model == "places205_googlenet":
        definition = write_googlenet(folder / "places205_googlenet.prototxt", 205, aux_heads=True)
    else:
        definition = folder / "small_net.prototxt"
        definition.write_text(SMALL_NET)
    weights = folder / f"{model}.SYNTHETIC-seed{WEIGHT_SEEDS[model]}.caffemodel"
    if not weights.is_file():
        write_synthetic_weights(definition, weights, WEIGHT_SEEDS[model])
    return definition, weights


def inputs() -> dict:
    """The notebook's sky and flowers, shrunk with Pillow's bilinear filter."""
    import PIL.Image

    from .. import assets

    out = {}
    for name, size in (("sky1024px.jpg", SKY_SIZE), ("flowers.jpg", FLOWERS_SIZE)):
        with PIL.Image.open(assets.fetch(assets.NOTEBOOK_ASSETS[name], progress=False)) as im:
            out[name] = np.float32(im.resize(size, PIL.Image.BILINEAR))
    return out


def compute(case: Case, images: dict, nets: Path) -> np.ndarray:
    """The case's float32 result: one image, or the zoom frames stacked."""
    from .. import dream
    from ..models import IMAGENET_MEAN_BGR
    from ..net import load_net
    from ..params import DreamParams

    definition, weights = net_files(case.model, nets)
    net = load_net(definition, weights, case.end, IMAGENET_MEAN_BGR)
    params = DreamParams(end=case.end, **case.params).as_kwargs()
    rng = np.random.RandomState(case.seed)
    sky = images["sky1024px.jpg"]
    if case.zoom_frames:
        frames = dream.zoom_frames(net, sky, case.zoom_frames, rng=rng, **params)
        return np.stack([f for _, f in frames])
    if case.guide:
        features = dream.guide_features(net, images["flowers.jpg"], case.end)
        params["objective"] = dream.objective_guide(features)
    return dream.deepdream(net, sky, rng=rng, **params)


def notebook_compute(case: Case, images: dict, nets: Path) -> np.ndarray:
    """The case computed by the notebook's own code cells (3, 6, 8; 19; 25, 27), on the
    notebook's net, after ``np.random.seed(case.seed)``, as tests/test_dream.py runs them."""
    from ..models import IMAGENET_MEAN_BGR
    from ..net import load_net
    from ..params import DreamParams
    from . import notebook

    definition, weights = net_files(case.model, nets)
    net = load_net(definition, weights, case.end, IMAGENET_MEAN_BGR, notebook_net=True)
    cells = notebook.code_cells()
    ns = notebook.definitions(cells, net)
    params = DreamParams(end=case.end, **case.params).as_kwargs()
    sky = images["sky1024px.jpg"]
    if case.guide:
        params["objective"] = notebook.guide_objective(cells, ns, images["flowers.jpg"])
    np.random.seed(case.seed)
    if not case.zoom_frames:
        return ns["deepdream"](net, sky, **params)
    return np.stack(notebook.zoom(cells, ns, sky, case.zoom_frames, params))


def agreement(ours: np.ndarray, notebook: np.ndarray) -> str | dict:
    """ "bit-identical", or how the notebook's cells' result differs from ours."""
    if ours.shape == notebook.shape and np.array_equal(ours, notebook):
        return "bit-identical"
    if ours.shape != notebook.shape:
        return {"shape": [list(ours.shape), list(notebook.shape)]}
    return {"max_abs": float(np.abs(ours.astype(np.float64) - notebook).max())}


def manifest(case: Case, nets: Path) -> dict:
    from .. import environment
    from ..params import DreamParams
    from . import synthetic

    definition, weights = net_files(case.model, nets)
    env = environment.environment(with_caffe=True)
    return {
        "case": asdict(case),
        "params": asdict(DreamParams(end=case.end, **case.params)),
        "input": {
            "sky1024px.jpg": list(SKY_SIZE),
            "flowers.jpg": list(FLOWERS_SIZE) if case.guide else None,
            "resize": "PIL bilinear",
        },
        "weights": {
            "recipe": synthetic.RECIPE,
            "seed": WEIGHT_SEEDS[case.model],
            "sha256": sha256(weights),
            "definition_sha256": sha256(definition),
        },
        "caffe_source_sha256": env["caffe_source_sha256"],
        "blas": env["blas"],
        "blas_kernel": env["blas_kernel"],
        "blas_threads": env["blas_threads"],
        "pinned_env": PINNED_ENV,
        "versions": {k: env[k] for k in ("python", "numpy", "scipy", "pillow", "protobuf")},
    }


def write_all(out: Path, nets: Path, with_notebook: bool = False) -> None:
    """Compute every case into ``out``: NAME.npy, NAME.png, NAME.json (``with_notebook``:
    also the notebook's cells' agreement, in the manifest)."""
    import PIL.Image

    from ..dream import to_uint8

    out.mkdir(parents=True, exist_ok=True)
    images = inputs()
    for case in CASES:
        result = compute(case, images, nets)
        np.save(out / f"{case.name}.npy", result)
        picture = np.concatenate(list(result), axis=1) if case.zoom_frames else result
        PIL.Image.fromarray(to_uint8(picture)).save(out / f"{case.name}.png")
        record = manifest(case, nets)
        if with_notebook:
            record["notebook_agreement"] = agreement(result, notebook_compute(case, images, nets))
            print(f"{case.name}: the notebook's cells: {record['notebook_agreement']}")
        (out / f"{case.name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")


def differences(a: np.ndarray, b: np.ndarray, tolerance: float = 0.0) -> dict:
    """max-abs, RMS and the share of values beyond ``tolerance`` (0-255 scale).

    A NaN or infinity in either array is a difference of infinity wherever it stands
    (``non_finite`` counts them), so that no comparison with a tolerance can pass it.
    """
    if a.shape != b.shape:
        return {"shape": [list(a.shape), list(b.shape)], "max_abs": float("inf")}
    a, b = a.astype(np.float64), b.astype(np.float64)
    bad = ~(np.isfinite(a) & np.isfinite(b))
    d = np.where(bad, np.inf, np.abs(np.where(bad, 0, a) - np.where(bad, 0, b)))
    return {
        "max_abs": float(d.max()) if d.size else 0.0,
        "rms": float(np.sqrt((d**2).mean())) if d.size else 0.0,
        "share_over_tolerance": float((d > tolerance).mean()) if d.size else 0.0,
        "non_finite": int(bad.sum()),
    }


def within(stats: dict, tolerance: float) -> bool:
    """True only for equal shapes, finite values and a max-abs difference within tolerance."""
    return (
        stats.get("non_finite", 1) == 0
        and "shape" not in stats
        and stats.get("max_abs", float("nan")) <= tolerance
    )


def update(reference: Path) -> int:
    """``make goldens``: recompute, say what changed, replace. Returns the number changed."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "fresh"
        write_all(fresh, Path(tmp) / "nets", with_notebook=True)
        changed = 0
        for case in CASES:
            old = reference / f"{case.name}.npy"
            new = np.load(fresh / f"{case.name}.npy")
            if not old.is_file():
                print(f"{case.name}: new")
                changed += 1
            elif not np.array_equal(np.load(old), new):
                print(f"{case.name}: CHANGED {differences(np.load(old), new)}")
                changed += 1
            else:
                print(f"{case.name}: unchanged")
            for suffix in (".npy", ".png", ".json"):
                shutil.copyfile(fresh / (case.name + suffix), reference / (case.name + suffix))
    print(f"{changed} of {len(CASES)} goldens changed; say why in the commit")
    return changed


def main(argv=None) -> int:
    """python -m deepdream_caffe.lab.goldens {update REFDIR | compute OUTDIR}"""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in ("update", "compute"):
        print(main.__doc__, file=sys.stderr)
        return 2
    if not avx2():
        print(
            "goldens: this CPU has no AVX2, so OpenBLAS's Haswell kernels (with which the "
            "goldens are made) cannot run here",
            file=sys.stderr,
        )
        return 1
    if not pinned():  # the BLAS reads its settings when it loads: start again with them
        os.execve(
            sys.executable,
            [sys.executable, "-m", "deepdream_caffe.lab.goldens", *argv],
            {**os.environ, **PINNED_ENV},
        )
    folder = Path(argv[1])
    if argv[0] == "update":
        update(folder)
    else:
        write_all(folder, folder / "nets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
