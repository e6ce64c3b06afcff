"""``make bundles``: ready-made golden bundles, and the spread between two correct
implementations that the tolerances of ``compare`` are calibrated on.

For bvlc_googlenet and places205_googlenet at three sizes of the notebook's sky, with seeded
synthetic weights (folders named ``synthetic-WxH``; ``bundle.json`` says ``weights_kind``), and
with the published weights too wherever they can be had (``real-WxH``); without them, that is
said and nothing stands in for them. Where PyTorch is installed, the PyTorch twin
(``lab/torchnet.py``) runs every bundle through ``examples/pytorch_export.py``, and the largest
relative L2 error per stage is written to ``spread.md``: the table in docs/golden-bundle.md.

    python -m deepdream_caffe.lab.ready_bundles out/bundles
"""

from __future__ import annotations

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

from .. import models
from ..errors import DreamError
from ..job import Job
from . import bundle

SIZES = ((128, 72), (256, 144), (320, 240))
SYNTHETIC_SEEDS = {"bvlc_googlenet": 0, "places205_googlenet": 1}  # as tests/conftest.py
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pytorch_export.py"


def synthetic_weights(name: str, folder: Path) -> Path:
    from .synthetic import write_synthetic_weights

    path = folder / f"{name}_synthetic_seed{SYNTHETIC_SEEDS[name]}.caffemodel"
    if not path.is_file():
        definition = models.model_definition(models.MODELS[name], say=print)
        write_synthetic_weights(definition, path, SYNTHETIC_SEEDS[name])
    return path


def real_weights(name: str, say) -> Path | None:
    try:
        return models.model_files(models.MODELS[name], progress=False)[1]
    except DreamError as e:
        say(
            f"bundles: no real-weight bundles for {name}: its published weights are not "
            f"available here ({e})"
        )
        return None


def make_bundles(out: Path, say=print) -> list[Path]:
    """Export every ready-made bundle into ``out/MODEL/KIND-WxH``; return the folders."""
    from .synthetic import RECIPE

    out.mkdir(parents=True, exist_ok=True)
    folders = []
    for name, seed in SYNTHETIC_SEEDS.items():
        sets = [
            (
                "synthetic",
                synthetic_weights(name, out),
                f"synthetic: seeded random weights, seed {seed} ({RECIPE}); not the "
                "published weights",
            )
        ]
        real = real_weights(name, say)
        if real is not None:
            sets.append(("real", None, None))  # the verified published weights
        for kind, weights, what in sets:
            for w, h in SIZES:
                folder = out / name / f"{kind}-{w}x{h}"
                job = Job(model=name, weights=weights, seed=0)
                bundle.export_job(job, folder, (w, h), say=say, kind=what)
                folders.append(folder)
    return folders


def load_example():
    """examples/pytorch_export.py, imported from the checkout (None where it is absent)."""
    if not EXAMPLE.is_file():
        return None
    spec = importlib.util.spec_from_file_location("pytorch_export", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def twin_arrays(folder: Path, out_path: Path, **export_options) -> dict:
    """Run the PyTorch twin over a bundle, through the reference exporter; write out_path."""
    from ..definition import read_definition
    from .torchnet import CaffeModule, params_from_weights_npz

    exporter = load_example()
    model = read_definition(folder / "net.prototxt")
    params = params_from_weights_npz(bundle.read_npz(folder / "weights.npz"))
    twin = CaffeModule(model, params)
    return exporter.export(folder, twin, twin.name_map(), out_path, **export_options)


def spread(folders, say=print) -> list[dict]:
    """The largest relative L2 error per stage, twin against Caffe, for every bundle."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for folder in folders:
            twin_arrays(folder, Path(tmp) / "twin.npz")
            result = bundle.compare(folder, Path(tmp) / "twin.npz")
            worst = {}
            for r in result["rows"]:
                if "relative_l2" in r:
                    worst[r["stage"]] = max(worst.get(r["stage"], 0.0), r["relative_l2"])
            meta = json.loads((folder / "bundle.json").read_text())
            rows.append(
                {
                    "model": meta["model"],
                    "size": "x".join(map(str, meta["size"])),
                    "weights": meta["weights_kind"].split(":")[0],
                    "passed": result["passed"],
                    **worst,
                }
            )
            say(f"spread: {folder}: {'PASS' if result['passed'] else 'FAIL'}")
    return rows


def spread_markdown(rows) -> str:
    # every stage but the two that must be equal (tolerance 0): they have no spread
    stages = [s for s in bundle.STAGES if s not in ("input_image", "octave_sizes")]
    lines = [
        "| model | weights | size | " + " | ".join(stages) + " |",
        "|---|---|---|" + "---|" * len(stages),
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['weights']} | {r['size']} | "
            + " | ".join(f"{r.get(s, 0.0):.1e}" for s in stages)
            + " |"
        )
    tol = bundle.TOLERANCES
    lines.append(
        "| tolerance | | | "
        + " | ".join("reported" if tol[s] is None else f"{tol[s]:.0e}" for s in stages)
        + " |"
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    out = Path((argv or sys.argv[1:] or ["out/bundles"])[0])
    try:
        folders = make_bundles(out)
        try:
            import torch  # noqa: F401
        except ImportError:
            print(
                "bundles: PyTorch is not installed, so the spread against the PyTorch twin "
                "was not measured (make bench installs it)"
            )
            return 0
        rows = spread(folders)
    except DreamError as e:
        print(f"bundles: error: {e}", file=sys.stderr)
        return 1
    (out / "spread.json").write_text(json.dumps(rows, indent=2) + "\n")
    (out / "spread.md").write_text(spread_markdown(rows))
    print(spread_markdown(rows), end="")
    return 0 if all(r["passed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
