"""The Docker images' recipes, read statically (`make docker-test` builds and runs the CPU one).

What is checked here is what would make an image wrong without failing its build: a builder
stage that sees the Python code (every edit rebuilds Caffe), build tools or the host's venv in
the run-time stage, root as the user, pins Debian drops, a build context with .venv in it.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.cuda"]
# What the Caffe build depends on; the builder stages may see nothing else of the checkout.
BUILD_INPUTS = {
    "caffe/",
    "scripts/setup.sh",
    "scripts/build-caffe.sh",
    "scripts/apt-install.sh",
    "requirements.txt",
    "requirements-cuda.txt",
    "docker/cuda-toolkit.txt",
}


def stages(text: str) -> dict:
    """Stage name -> its instructions, each one logical line (continuations joined)."""
    lines = re.sub(r"\s*\\\n\s*", " ", text).splitlines()
    found, current = {}, None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"FROM\s+\S+\s+AS\s+(\S+)", line, re.I)
        if m:
            current = m.group(1)
            found[current] = []
        if current:
            found[current].append(line)
    return found


def copies(instructions: list) -> list:
    """The checkout paths the stage's COPY instructions send (not COPY --from)."""
    paths = []
    for line in instructions:
        words = line.split()
        if words[0] == "COPY" and not any(w.startswith("--from") for w in words):
            paths += [w for w in words[1:-1] if not w.startswith("--")]
    return paths


def apt_packages(instructions: list) -> list:
    found = []
    for line in instructions:
        for m in re.finditer(r"apt-get install ((?:\s*-\S+)*)((?:\s+[a-z0-9][\w.+:=~-]*)+)", line):
            found += m.group(2).split()
    return found


@pytest.fixture(params=DOCKERFILES)
def dockerfile(request):
    return stages((ROOT / "docker" / request.param).read_text())


def test_stage_parser_reads_continuations_and_names():
    parsed = stages("FROM a AS one\nRUN x \\\n    && y\n# c\nFROM b AS two\nCOPY p q /d/\n")
    assert parsed == {
        "one": ["FROM a AS one", "RUN x && y"],
        "two": ["FROM b AS two", "COPY p q /d/"],
    }
    assert copies(parsed["two"]) == ["p", "q"]


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfiles_lint_clean(name):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    p = subprocess.run(
        [hadolint, "--config", str(ROOT / "docker/.hadolint.yaml"), str(ROOT / "docker" / name)],
        capture_output=True,
        text=True,
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_hadolint_config_says_why_for_every_ignored_rule():
    text = (ROOT / "docker/.hadolint.yaml").read_text()
    for rule in re.findall(r"^\s*-\s*(DL\d+)", text, re.M):
        assert re.search(rf"#\s*{rule}\b", text), f"{rule} is ignored without a reason"


def test_builder_stages_see_only_the_build_inputs(dockerfile):
    for name in ("toolkit", "builder"):
        for path in copies(dockerfile.get(name, [])):
            assert path in BUILD_INPUTS, f"stage {name} copies {path}: edits to it rebuild Caffe"
    assert "scripts/setup.sh" in copies(dockerfile["builder"])
    assert any("scripts/setup.sh" in line for line in dockerfile["builder"] if "RUN" in line)


def test_runtime_stage_has_runtime_libraries_only(dockerfile):
    runtime = dockerfile["runtime"]
    packages = apt_packages(runtime)
    assert packages, "the runtime stage installs its libraries"
    build_tools = {
        "build-essential",
        "cmake",
        "g++",
        "gcc",
        "make",
        "patch",
        "python3-pip",
        "protobuf-compiler",
        "pkg-config",
    }
    assert not [p for p in packages if p.endswith("-dev") or p in build_tools]
    assert copies(runtime) == [], "the runtime stage takes nothing from the checkout directly"
    sources = [line.split()[-2] for line in runtime if line.startswith("COPY --from")]
    assert not [s for s in sources if "caffe-cache" in s or s.endswith("/build")]


def test_no_per_package_version_pins(dockerfile):
    for stage in dockerfile.values():
        assert [p for p in apt_packages(stage) if "=" in p] == []
    assert dockerfile["builder"][0].split()[1] == "${BASE}"


def test_runtime_runs_as_a_numeric_non_root_user_with_the_volumes(dockerfile):
    runtime = dockerfile["runtime"]
    user = [line.split()[1] for line in runtime if line.startswith("USER ")]
    assert user and user[-1].split(":")[0].isdigit() and user[-1].split(":")[0] != "0"
    assert 'ENTRYPOINT ["deepdream-caffe"]' in runtime
    volumes = " ".join(line for line in runtime if line.startswith("VOLUME"))
    assert '"/data"' in volumes and '"/out"' in volumes
    assert any("DEEPDREAM_CAFFE_MIRROR=/data" in line for line in runtime)


def test_cuda_image_builds_cuda_13_from_pinned_wheels():
    text = (ROOT / "docker/Dockerfile.cuda").read_text()
    assert re.search(r"^FROM \$\{BASE\}", text, re.M) and "ARG BASE=debian:bookworm" in text
    toolkit = (ROOT / "docker/cuda-toolkit.txt").read_text()
    pins = dict(re.findall(r"^([\w-]+)==(\S+)", toolkit, re.M))
    assert pins["nvidia-cuda-nvcc"].startswith("13.")
    assert {"nvidia-cuda-runtime", "nvidia-cuda-cccl", "nvidia-nvvm"} <= set(pins)
    assert not [
        line
        for line in toolkit.splitlines()
        if line.strip() and not line.startswith("#") and "==" not in line
    ]
    assert 'CUDA_ARCH_BIN="75 80 86 89 90"' in text and "CUDA_ARCH_PTX=90" in text


def test_dockerignore_keeps_the_host_state_out_of_the_context():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "out", "**/__pycache__", "*.egg-info"} <= ignored


def test_docker_scripts_parse_and_make_has_the_targets():
    for script in ("docker-daemon.sh", "docker-build.sh", "docker-test.sh"):
        subprocess.run(["bash", "-n", str(ROOT / "scripts" / script)], check=True)
    targets = re.findall(r"^([a-z-]+):", (ROOT / "Makefile").read_text(), re.M)
    assert {"docker", "docker-cuda", "docker-test"} <= set(targets)
    assert "make docker-test" in (ROOT / ".ci" / "run").read_text()


def test_docker_build_refuses_an_unknown_variant():
    p = subprocess.run(
        [str(ROOT / "scripts/docker-build.sh"), "gpu"], capture_output=True, text=True
    )
    assert p.returncode == 1 and "usage" in p.stderr


FAKE_DOCKERD = """#!/bin/bash
# stands in for dockerd: answers (its socket path exists) until TERM
while [ $# -gt 0 ]; do
  case $1 in --pidfile) pidfile=$2; shift ;; --host) sock=${2#unix://}; shift ;; esac; shift
done
echo $$ >"$pidfile"; touch "$sock"
trap 'rm -f "$sock"; exit 0' TERM
while :; do sleep 0.1; done
"""
FAKE_DOCKER = """#!/bin/sh
# stands in for the client: succeeds while the daemon DOCKER_HOST names answers
[ -n "$DOCKER_HOST" ] && [ -e "${DOCKER_HOST#unix://}" ]
"""


@pytest.fixture
def fake_docker(tmp_path):
    """PATH with a fake dockerd and docker client; the private daemon's root in tmp_path."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("dockerd", FAKE_DOCKERD), ("docker", FAKE_DOCKER)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", DEEPDREAM_DOCKER_ROOT=str(tmp_path / "root"))
    return env, tmp_path / "root"


def daemon_with(env, *command):
    return subprocess.run(
        [str(ROOT / "scripts/docker-daemon.sh"), "with", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == "dockerd"
    except FileNotFoundError:
        return False


def test_private_daemon_is_stopped_after_a_failing_command(fake_docker):
    env, root = fake_docker
    p = daemon_with(env, "sh", "-c", 'echo "$DOCKER_HOST"; cat "$0"', str(root / "run/dockerd.pid"))
    assert p.returncode == 0, p.stderr
    host, pid = p.stdout.split()
    assert host == f"unix://{root}/run/docker.sock"
    assert not alive(int(pid)) and not (root / "run/dockerd.pid").exists()
    p = daemon_with(env, "sh", "-c", "exit 3")
    assert p.returncode == 3 and "stopping the private dockerd" in p.stderr
    assert not (root / "run/dockerd.pid").exists()


def test_a_daemon_or_pid_left_by_a_killed_run_does_not_block_the_next(fake_docker):
    env, root = fake_docker
    (root / "run").mkdir(parents=True)
    (root / "run/dockerd.pid").write_text("4194303\n")  # no such process: a stale pid file
    assert daemon_with(env, "true").returncode == 0
    left = subprocess.Popen(
        [
            "dockerd",
            "--pidfile",
            str(root / "run/dockerd.pid"),
            "--host",
            f"unix://{root}/run/docker.sock",
        ],
        env=env,
    )
    try:
        for _ in range(50):
            if (root / "run/docker.sock").exists():
                break
            time.sleep(0.1)
        p = daemon_with(env, "true")  # reuses the one left running, then stops it
        assert p.returncode == 0, p.stderr
        assert "starting" not in p.stderr and "stopping" in p.stderr
        left.wait(timeout=30)
    finally:
        left.kill()


def test_signal_stops_the_command_and_the_daemon(fake_docker):
    env, root = fake_docker
    run = subprocess.Popen(
        [str(ROOT / "scripts/docker-daemon.sh"), "with", "sleep", "60"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if (root / "run/docker.sock").exists():
            break
        time.sleep(0.1)
    time.sleep(0.5)
    pid = int((root / "run/dockerd.pid").read_text())
    run.send_signal(signal.SIGTERM)
    assert run.wait(timeout=60) == 143
    assert not alive(pid) and not (root / "run/dockerd.pid").exists()


# docker-build.sh against a client that records its calls. The engine's storage driver, its
# build cache records and the free disk are the fake's environment (FAKE_DRIVER, FAKE_RECORDS,
# FAKE_FREE_KB), so the disk policy is checked without a daemon or a full disk.
FAKE_BUILD_CLIENT = """#!/bin/sh
echo "docker $*" >>"$FAKE_LOG"
case "$1 $2 $3" in
  "info -f {{.Driver}}") echo "$FAKE_DRIVER" ;;
  "info -f {{.DockerRootDir}}") echo "$FAKE_ROOT" ;;
  "system df --format") printf 'Images 2\nBuild Cache %s\n' "$FAKE_RECORDS" ;;
  "buildx version "*) exit 1 ;;
  "version --format "*) echo 20.10.24 ;;
  "image inspect -f") echo 882000000 ;;
  "run --rm --network") echo "caffe_variant        cpu" ;;
esac
exit 0
"""
FAKE_DF = """#!/bin/sh
[ -n "$FAKE_FREE_KB" ] || { echo "df: cannot read" >&2; exit 1; }
echo "Filesystem 1024-blocks Used Available Capacity Mounted"
echo "fake 1 1 $FAKE_FREE_KB 1% /"
"""


def docker_build(tmp_path, driver="vfs", free_gb=100, records=20, **env_more):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in (("docker", FAKE_BUILD_CLIENT), ("df", FAKE_DF)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.log"
    log.unlink(missing_ok=True)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_LOG=str(log))
    env.update(FAKE_DRIVER=driver, FAKE_ROOT=str(tmp_path), FAKE_RECORDS=str(records))
    env.update(FAKE_FREE_KB="" if free_gb is None else str(free_gb << 20), **env_more)
    env.setdefault("DEEPDREAM_DOCKER_FREE_GB", "30")
    p = subprocess.run(
        [str(ROOT / "scripts/docker-build.sh"), "cpu"], env=env, capture_output=True, text=True
    )
    calls = log.read_text().splitlines() if log.exists() else []
    return p, [c for c in calls if "builder prune" in c], any(" build " in c for c in calls)


def test_vfs_build_cache_is_kept_while_the_disk_has_room(tmp_path):
    p, prunes, built = docker_build(tmp_path, free_gb=60)
    assert p.returncode == 0, p.stderr
    assert built and prunes == []


@pytest.mark.parametrize("free_gb, keep", [(12, "30"), (60, "100")])
def test_vfs_build_cache_goes_when_the_disk_runs_short(tmp_path, free_gb, keep):
    p, prunes, built = docker_build(tmp_path, free_gb=free_gb, DEEPDREAM_DOCKER_FREE_GB=keep)
    assert p.returncode == 0, p.stderr
    assert built and prunes == ["docker builder prune -af"]
    assert f"{free_gb} GB left free" in p.stderr and f"DEEPDREAM_DOCKER_FREE_GB={keep}" in p.stderr


def test_vfs_disk_that_cannot_be_measured_counts_as_full(tmp_path):
    p, prunes, built = docker_build(tmp_path, free_gb=None)  # df fails
    assert p.returncode == 0, p.stderr
    assert built and prunes == ["docker builder prune -af"]


def test_overlay_build_cache_is_kept_by_dockers_own_count(tmp_path):
    p, prunes, built = docker_build(tmp_path, driver="overlay2", free_gb=1, records=0)
    assert p.returncode == 0, p.stderr
    assert built and prunes == ["docker builder prune -f --keep-storage 20GB"]


def test_a_cold_vfs_build_without_room_stops_before_building(tmp_path):
    p, prunes, built = docker_build(tmp_path, free_gb=3, records=0)
    assert p.returncode == 1 and not built and prunes == []
    (line,) = p.stderr.strip().splitlines()
    assert "only 3 GB free" in line and "free disk space" in line
    p, _, built = docker_build(tmp_path, free_gb=3, records=20)  # a warm one may need little
    assert p.returncode == 0 and built


@pytest.mark.parametrize("bad", ["30G", "-1", "1e3", "nan", "30 ", "0x10", "3\n0"])
def test_a_bad_free_gb_setting_is_one_line(tmp_path, bad):
    p, _, built = docker_build(tmp_path, DEEPDREAM_DOCKER_FREE_GB=bad)
    assert p.returncode == 1 and not built
    (line,) = p.stderr.strip().splitlines()
    assert "DEEPDREAM_DOCKER_FREE_GB" in line and "whole number" in line
