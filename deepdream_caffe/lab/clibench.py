"""The command against the notebook's own code, whole process against whole process.

``python -m deepdream_caffe.lab.clibench -o DIR [--repeats N]`` times two dreams on the
bvlc_googlenet architecture with seeded synthetic weights (lab/bench.py's), each run as a user
would run it, in a fresh process, from start to exit:

- ``default``: the notebook's default dream (4 octaves x 10 steps, inception_4c/output) on
  its sky shrunk to 512x288;
- ``tiny``: 64x48, 1 octave, 1 step: what the command costs beyond the dream itself.

``cli`` is ``deepdream-caffe dream ... --raw``; ``notebook`` is a Python process running the
notebook's cells 3 (its model loading: force_backward, tmp.prototxt, ``caffe.Classifier``), 6
and 8 after ``np.random.seed(0)``. Runs alternate (cli, notebook, cli, ...) so that a change in
the machine's load touches both; the median of each is reported, with the ratio, and whether
the two results are the same bits. Results: DIR/clibench.json and DIR/clibench.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from .. import environment
from ..errors import DreamError
from .bench import bench_cache, bench_image, synthetic_net_files

CASES = {
    "default": dict(size=(512, 288), octave_n=4, iter_n=10),
    "tiny": dict(size=(64, 48), octave_n=1, iter_n=1),
}
SEED = 0

# The notebook's own code in a process of its own: cell 3's loading (paths given), cells 6, 8.
NOTEBOOK = r"""
import json, sys
import numpy as np
import scipy.ndimage as nd
import PIL.Image
from google.protobuf import text_format
import caffe

definition, weights, image, octave_n, iter_n, raw, notebook = sys.argv[1:8]
cells = json.load(open(notebook))["worksheets"][0]["cells"]
code = {i: "".join(cells[i]["input"]).replace("xrange", "range") for i in (3, 6, 8)}
model = caffe.io.caffe_pb2.NetParameter()
text_format.Merge(open(definition).read(), model)
model.force_backward = True
open("tmp.prototxt", "w").write(str(model))
net = caffe.Classifier("tmp.prototxt", weights, mean=np.float32([104.0, 116.0, 122.0]),
                       channel_swap=(2, 1, 0))
ns = dict(np=np, nd=nd, net=net, showarray=lambda *a, **k: None,
          clear_output=lambda *a, **k: None)
for i in (3, 6, 8):
    text = code[i][code[i].index("def preprocess"):] if i == 3 else code[i]
    exec("\n".join(l for l in text.splitlines() if not l.strip().startswith("print ")), ns)
np.random.seed(0)
img = np.float32(PIL.Image.open(image))
np.save(raw, ns["deepdream"](net, img, octave_n=int(octave_n), iter_n=int(iter_n)))
"""


def timed(cmd, cwd) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def run_case(name, case, folder: Path, repeats: int) -> dict:
    import PIL.Image

    from .. import assets

    definition, weights = synthetic_net_files(bench_cache())
    notebook = assets.fetch(assets.NOTEBOOK_ASSETS["dream.ipynb"])
    folder = folder.resolve()  # both commands run in it
    folder.mkdir(parents=True, exist_ok=True)
    image = folder / f"{name}.png"
    PIL.Image.fromarray(np.uint8(bench_image(case["size"]))).save(image)
    numbers = [str(case["octave_n"]), str(case["iter_n"])]
    cli = [
        *[sys.executable, "-m", "deepdream_caffe.cli", "dream", str(image)],
        *["-o", str(folder / f"{name}-cli.png"), "--raw", str(folder / f"{name}-cli.npy")],
        *["--model-def", str(definition), "--weights", str(weights), "--seed", str(SEED)],
        *["--octave-n", numbers[0], "--iter-n", numbers[1]],
    ]
    nb = [
        *[sys.executable, "-c", NOTEBOOK, str(definition), str(weights), str(image)],
        *[*numbers, str(folder / f"{name}-notebook.npy"), str(notebook)],
    ]
    times = {"cli": [], "notebook": []}
    timed(cli, folder)  # warm the page cache and the synthetic weights' reading
    for _ in range(repeats):
        times["cli"].append(timed(cli, folder))
        times["notebook"].append(timed(nb, folder))
    ours = np.load(folder / f"{name}-cli.npy")
    theirs = np.load(folder / f"{name}-notebook.npy")
    median = {k: statistics.median(v) for k, v in times.items()}
    return {
        "case": name,
        **case,
        "seconds": times,
        "median_s": median,
        "ratio": median["cli"] / median["notebook"],
        "bit_identical": ours.dtype == theirs.dtype and ours.tobytes() == theirs.tobytes(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deepdream_caffe.lab.clibench")
    parser.add_argument("-o", "--output", type=Path, default=Path("out/bench-cli"))
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    # Both processes run the OpenBLAS kernel the command chooses: the notebook's own
    # `import caffe` would otherwise get OpenBLAS's choice.
    environment.choose_blas_kernel()
    try:
        results = [run_case(n, c, args.output, args.repeats) for n, c in CASES.items()]
    except DreamError as e:  # the notebook's files or the synthetic weights: one line
        print(f"clibench: error: {e}", file=sys.stderr)
        return 1
    (args.output / "clibench.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "| case | size | octaves x steps | cli (s, median) | notebook (s, median) | ratio "
        "| same bits |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['case']} | {r['size'][0]}x{r['size'][1]} | {r['octave_n']} x {r['iter_n']} "
            f"| {r['median_s']['cli']:.2f} | {r['median_s']['notebook']:.2f} "
            f"| {r['ratio']:.2f} | {'yes' if r['bit_identical'] else 'NO'} |"
        )
    (args.output / "clibench.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["bit_identical"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
