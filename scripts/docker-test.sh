#!/usr/bin/env bash
# make docker-test: build the CPU image, then check inside it, against this checkout's .venv:
#   1. `info` runs and reports a CPU build of the pinned Caffe source; pycaffe imports;
#   2. a dream with seeded synthetic bvlc_googlenet weights is bit-identical to the same dream on
#      the host (raw float32 result and PNG), with the same OpenBLAS kernel and threads on both
#      sides (OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS passed explicitly; the sidecars must agree);
#   3. a 2-task sweep (the image's Dask) and a 2-frame zoom video (its ffmpeg) finish;
#   4. with no network and no weights in /data, a dream fails with exit 1 and one line naming
#      DEEPDREAM_CAFFE_MIRROR, and writes nothing;
#   5. what the container writes to /out is owned by, and readable by, the user who ran this.
# Needs a reachable Docker engine (make docker-test runs this under scripts/docker-daemon.sh)
# and `make setup` (the host side of the comparison).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
image=${DOCKER_TAG:-deepdream-caffe:cpu}
py=$here/.venv/bin/python
# One kernel and one thread on both sides: the bits of a dream depend on both
# (docs/determinism.md). Haswell needs AVX2, as the goldens do.
coretype=${DOCKER_TEST_CORETYPE:-Haswell}
threads=1
say() { printf '[docker-test] %s\n' "$*" >&2; }
fail() { printf '[docker-test] FAIL: %s\n' "$*" >&2; exit 1; }

[ -x "$py" ] || fail "no $py: run make setup first"
"$here/scripts/docker-build.sh" cpu

work=$here/out/docker-test
rm -rf "$work"
mkdir -p "$work/data" "$work/nodata" "$work/host" "$work/docker" "$work/offline"
me="$(id -u):$(id -g)"
run() { docker run --rm --network none --user "$me" -e OPENBLAS_CORETYPE="$coretype" \
          -e OPENBLAS_NUM_THREADS="$threads" "$@"; }

# 1. info
info=$(run "$image" info) || fail "info failed in the container"
printf '%s\n' "$info" | grep -E '^(caffe_)?(variant|source_sha256|blas|blas_kernel)' >&2 || true
printf '%s\n' "$info" | grep -q 'e0eb3f06794f7402c77b7dec8e8480273ee1a1bb192e9122b621a69d4147ad0c' ||
  fail "info does not name the pinned Caffe source sha256"
printf '%s\n' "$info" | grep -qE 'variant[^a-z]+cpu' || fail "info does not report the CPU variant"
# (info reads the build record without importing pycaffe; the import is checked on its own)
run -e GLOG_minloglevel=2 --entrypoint python "$image" -c 'import caffe' || fail "pycaffe does not import"

# 2. the same dream on both sides
say "making a test image and synthetic bvlc_googlenet weights (seed 0)"
GLOG_minloglevel=2 "$py" - "$work/data" <<'EOF'
import shutil, sys
from pathlib import Path
import numpy as np
from PIL import Image
from deepdream_caffe.build import caffe_source_dir
from deepdream_caffe.lab.synthetic import write_synthetic_weights
data = Path(sys.argv[1])
rng = np.random.RandomState(0)
Image.fromarray(rng.randint(0, 256, (72, 128, 3), dtype=np.uint8)).save(data / "in.png")
deploy = data / "deploy.prototxt"
shutil.copy(caffe_source_dir() / "models/bvlc_googlenet/deploy.prototxt", deploy)
write_synthetic_weights(deploy, data / "bvlc_googlenet-synthetic-seed0.caffemodel", seed=0)
EOF
cp "$work/data/in.png" "$work/nodata/in.png"
model=(--model-def deploy.prototxt --weights bvlc_googlenet-synthetic-seed0.caffemodel)
args=("${model[@]}" --seed 0)
say "dream on the host (OPENBLAS_CORETYPE=$coretype, $threads thread)"
(cd "$work/data" && OPENBLAS_CORETYPE=$coretype OPENBLAS_NUM_THREADS=$threads \
  "$here/.venv/bin/deepdream-caffe" dream in.png -o "$work/host/dream.png" \
  --raw "$work/host/dream.npy" "${args[@]}" 2>/dev/null) || fail "the host dream failed"
say "the same dream in the container"
run -v "$work/data:/data:ro" -v "$work/docker:/out" -w /data "$image" \
  dream in.png -o /out/dream.png --raw /out/dream.npy "${args[@]}" ||
  fail "the dream failed in the container"
"$py" - "$work/host/dream.png.json" "$work/docker/dream.png.json" <<'EOF' || fail "the two sides did not use the same BLAS set-up"
import json, sys
host, docker = (json.load(open(p)) for p in sys.argv[1:])
def blas(side):
    found = {}
    def walk(d):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v)
            elif k in ("blas_kernel", "blas_threads"):
                found[k] = v
    walk(side)
    return found
print(f"[docker-test] BLAS host {blas(host)}, container {blas(docker)}", file=sys.stderr)
sys.exit(0 if blas(host) == blas(docker) and blas(host) else 1)
EOF
cmp "$work/host/dream.npy" "$work/docker/dream.npy" || fail "the raw results differ between host and container"
cmp "$work/host/dream.png" "$work/docker/dream.png" || fail "the PNGs differ between host and container"
say "bit-identical: raw float32 result and PNG ($(sha256sum <"$work/docker/dream.npy" | cut -c1-16))"

# 3. a sweep on the image's Dask (2 tasks on a local cluster) and a video with its ffmpeg
say "a 2-task sweep and a 2-frame zoom video in the container"
quick=(--iter-n 1 --octave-n 1)
run -v "$work/data:/data:ro" -v "$work/docker:/out" -w /data "$image" \
  sweep in.png -o /out/sweep --seeds 0,1 --workers 1 "${quick[@]}" "${model[@]}" \
  >"$work/sweep.log" 2>&1 || fail "the sweep failed in the container: $(tail -n 3 "$work/sweep.log")"
"$py" - "$work/docker/sweep/manifest.json" <<'EOF2' || fail "the sweep did not finish its 2 tasks"
import json, sys
tasks = json.load(open(sys.argv[1]))["tasks"]
sys.exit(0 if [t["status"] for t in tasks] == ["done", "done"] else 1)
EOF2
run -v "$work/data:/data:ro" -v "$work/docker:/out" -w /data "$image" \
  zoom in.png -o /out/frames --frames 2 --video /out/zoom.mp4 "${quick[@]}" "${args[@]}" \
  >"$work/zoom.log" 2>&1 || fail "zoom --video failed in the container: $(tail -n 3 "$work/zoom.log")"
[ -s "$work/docker/zoom.mp4" ] || fail "zoom --video wrote no video"
say "sweep: 2 of 2 tasks done; zoom.mp4: $(stat -c %s "$work/docker/zoom.mp4") bytes"

# 4. weights that cannot be had: one line, exit 1, nothing written
set +e
run -v "$work/nodata:/data:ro" -v "$work/offline:/out" "$image" dream /data/in.png -o /out/x.png \
  >"$work/offline.stdout" 2>"$work/offline.stderr"
rc=$?
set -e
[ $rc = 1 ] || fail "unreachable weights: exit status $rc, expected 1 ($(cat "$work/offline.stderr"))"
[ "$(wc -l <"$work/offline.stderr")" = 1 ] || fail "unreachable weights: not one line: $(cat "$work/offline.stderr")"
grep -q DEEPDREAM_CAFFE_MIRROR "$work/offline.stderr" || fail "unreachable weights: the line does not name DEEPDREAM_CAFFE_MIRROR"
[ -z "$(ls -A "$work/offline")" ] || fail "unreachable weights: something was written: $(ls -A "$work/offline")"
say "unreachable weights: $(cat "$work/offline.stderr")"

# 5. ownership and modes of what the container wrote
while IFS= read -r -d '' f; do
  [ "$(stat -c %u:%g "$f")" = "$me" ] || fail "$f is owned by $(stat -c %u:%g "$f"), not $me"
  [ $(( 0$(stat -c %a "$f") & 0400 )) != 0 ] || fail "$f is not readable by its owner"
done < <(find "$work/docker" -mindepth 1 -print0)
say "outputs owned by $me: $(cd "$work/docker" && stat -c '%n %U:%G %A' -- * | paste -sd' ') (and all within)"
if [ "$(id -u)" = 0 ]; then  # root proves little: also an arbitrary uid with no home in the image
  other=4321:4321
  mkdir -p "$work/other" && chown "$other" "$work/other"
  docker run --rm --network none --user "$other" -v "$work/data:/data:ro" -v "$work/other:/out" \
    -w /data "$image" dream in.png -o /out/dream.png "${quick[@]}" "${args[@]}" >"$work/other.log" 2>&1 ||
    fail "a dream as uid $other failed in the container: $(tail -n 3 "$work/other.log")"
  [ "$(stat -c %u:%g "$work/other/dream.png")" = "$other" ] || fail "uid $other does not own its result"
  say "a dream as uid $other (no account in the image): owned by $other"
fi
say "passed"
