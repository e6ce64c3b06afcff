"""Packaging: environment.yml and the conda branch of scripts/setup.sh, Makefile, README, docs.
(The Dockerfiles: tests/test_docker.py.)"""

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def pins(text):
    return dict(re.findall(r"^\s*-?\s*([A-Za-z0-9_.-]+)==([^\s#]+)", text, re.M))


def test_environment_yml_matches_requirements():
    pip = pins((ROOT / "requirements.txt").read_text())
    pip.update(pins((ROOT / "requirements-test.txt").read_text()))
    conda = pins((ROOT / "environment.yml").read_text())
    assert conda == pip
    # torch is optional (requirements-bench.txt), never forced into the environment
    assert not set(pins((ROOT / "requirements-bench.txt").read_text())) & set(conda)


def test_environment_yml_parses_and_has_the_cxx_dependencies():
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"][0] == "conda-forge"
    names = {re.split(r"[=<>]", d)[0] for d in env["dependencies"] if isinstance(d, str)}
    assert {
        "python",
        "pip",
        "cmake",
        "cxx-compiler",
        "libboost-devel",
        "libboost-python-devel",
        "libprotobuf",
        "glog",
        "gflags",
        "hdf5",
        "openblas",
    } <= names
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip == [f"{k}=={v}" for k, v in pins((ROOT / "environment.yml").read_text()).items()]


CONDA_NEEDS = (
    re.search(r"conda_needs=\((.*?)\)", (ROOT / "scripts/setup.sh").read_text(), re.S)
    .group(1)
    .split()
)


def stand_in_prefix(tmp_path: Path, skip=()) -> Path:
    prefix = tmp_path / "env"
    prefix.mkdir()
    for name in CONDA_NEEDS:
        if name not in skip:
            (prefix / name).parent.mkdir(parents=True, exist_ok=True)
            (prefix / name).touch()
    return prefix


def apt_trap(tmp_path: Path) -> tuple[dict, Path]:
    """PATH with apt-get and sudo that only record that they were called."""
    bin_dir, log = tmp_path / "trap-bin", tmp_path / "apt.log"
    bin_dir.mkdir()
    for name in ("apt-get", "sudo"):
        (bin_dir / name).write_text(f'#!/bin/sh\necho {name} "$@" >>{log}\nexit 1\n')
        (bin_dir / name).chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONDA", "VIRTUAL_ENV"))}
    env["PATH"] = f"{bin_dir}:{env['PATH']}"
    return env, log


def test_setup_in_conda_env_names_missing_packages_and_never_uses_apt(tmp_path):
    prefix = stand_in_prefix(tmp_path, skip={"include/glog/logging.h", "bin/protoc"})
    env, log = apt_trap(tmp_path)
    p = subprocess.run(
        [str(ROOT / "scripts/setup.sh")],
        env={**env, "CONDA_PREFIX": str(prefix)},
        capture_output=True,
        text=True,
    )
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "bin/protoc include/glog/logging.h" in lines[0]
    assert "conda env update -f environment.yml" in lines[0]
    assert not log.exists()


@pytest.mark.caffe
@pytest.mark.slow
def test_setup_in_conda_env_installs_pycaffe_and_the_project_into_it(tmp_path):
    """The conda branch end to end against a stand-in prefix: a venv posing as the env, with
    this checkout's packages visible, and a Caffe build the cache already holds (the real one,
    linked in), so that nothing is compiled and no conda channel is needed."""
    import numpy as np

    from deepdream_caffe.build import caffe_build_dir

    prefix = stand_in_prefix(tmp_path)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(prefix)], check=True)
    site = subprocess.run(
        [
            str(prefix / "bin/python"),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    ours = str(Path(np.__file__).parents[1])  # this checkout's site-packages
    Path(site, "checkout-packages.pth").write_text(ours + "\n")
    env, log = apt_trap(tmp_path)
    env.update(CONDA_PREFIX=str(prefix), DEEPDREAM_CAFFE_CACHE=str(tmp_path / "cache"))
    dest = Path(
        subprocess.run(
            [str(ROOT / "scripts/build-caffe.sh"), "--print-dir"],
            # as setup.sh's conda route runs it: the env's own OpenBLAS (OpenBLAS_HOME)
            env={**env, "PYTHON": str(prefix / "bin/python"), "OpenBLAS_HOME": str(prefix)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    assert dest.parent == tmp_path / "cache"
    dest.mkdir(parents=True)
    (dest / "install").symlink_to(caffe_build_dir() / "install")
    record = json.loads((caffe_build_dir() / "build-info.json").read_text())
    (dest / "build-info.json").write_text(json.dumps(record))
    venv_pth = Path(ours, "pycaffe.pth").read_text()

    for cache in [
        *ROOT.glob("deepdream_caffe/**/__pycache__"),
        *dest.glob("install/**/__pycache__"),
    ]:
        shutil.rmtree(cache)
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # as some machines have it: setup writes them anyway

    p = subprocess.run([str(ROOT / "scripts/setup.sh")], env=env, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert not log.exists(), log.read_text()
    assert "apt is not used" in p.stderr
    assert Path(site, "pycaffe.pth").read_text().strip() == str(dest / "install/python")
    assert (prefix / "bin/deepdream-caffe").is_file()
    info = subprocess.run(
        [str(prefix / "bin/deepdream-caffe"), "info"], env=env, capture_output=True, text=True
    )
    assert info.returncode == 0 and record["cache_key"] in info.stdout
    assert Path(ours, "pycaffe.pth").read_text() == venv_pth  # the checkout's .venv untouched
    # the bytecode of the project and of pycaffe, written whatever PYTHONDONTWRITEBYTECODE says
    assert not stale_bytecode(ROOT / "deepdream_caffe") + stale_bytecode(dest / "install/python")


def stale_bytecode(folder: Path) -> list:
    """The modules under ``folder`` whose cached bytecode is missing or older than the source
    (the header's source mtime and size, as Python checks them)."""
    import importlib.util

    stale = []
    for source in folder.rglob("*.py"):
        header = Path(importlib.util.cache_from_source(source))
        header = header.read_bytes()[8:16] if header.is_file() else b""
        stat = source.stat()
        if header != (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + (
            stat.st_size & 0xFFFFFFFF
        ).to_bytes(4, "little"):
            stale.append(str(source))
    return stale


def test_makefile_starts_with_help_and_has_the_targets():
    text = (ROOT / "Makefile").read_text()
    targets = re.findall(r"^([a-z-]+):", text, re.M)
    assert targets[0] == "help"
    assert {"setup", "test", "caffe", "caffe-test", "clean", "distclean", "dream"} <= set(targets)


def test_readme_starts_with_the_two_commands():
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S)
    assert blocks[0].strip() == "make dream" and blocks[1].strip() == "make test"
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def test_docs_document_every_make_target():
    text = (ROOT / "docs" / "commands.md").read_text()
    for target in re.findall(r"^([a-z-]+):.*## ", (ROOT / "Makefile").read_text(), re.M):
        assert f"make {target}" in text, target


def test_ruff_is_clean():
    ruff = Path(__import__("sys").executable).parent / "ruff"
    p = subprocess.run(
        [str(ruff), "check", "deepdream_caffe", "tests"], cwd=ROOT, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stdout + p.stderr


def test_pyproject_extras_are_the_requirement_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {
        name: pins("\n".join(reqs)) for name, reqs in project["optional-dependencies"].items()
    }
    assert extras["test"] == pins((ROOT / "requirements-test.txt").read_text())
    assert extras["bench"] == pins((ROOT / "requirements-bench.txt").read_text())
    assert extras["bench"]["torch"].endswith("+cpu")  # never PyPI's multi-GB CUDA build


def test_license_file_and_field():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert project["requires-python"] == ">=3.11"


def test_scripts_are_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (make lint installs it)")
    scripts = sorted(str(p) for p in (ROOT / "scripts").glob("*.sh")) + [str(ROOT / ".ci/run")]
    p = subprocess.run(["shellcheck", *scripts], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_make_lint_checks_format_and_shell_and_caffe_builds_only_caffe():
    def dry(target):
        return subprocess.run(
            ["make", "--no-print-directory", "-n", target], cwd=ROOT, capture_output=True, text=True
        ).stdout

    lint = dry("lint")
    assert "ruff check" in lint and "ruff format --check" in lint and "shellcheck scripts/" in lint
    caffe = dry("caffe")
    assert caffe.strip() == "scripts/setup.sh --caffe-only"


def variables_read():
    """Environment variables the code, the notebook, the scripts and the Makefile read."""
    found = set()
    sources = [*ROOT.joinpath("deepdream_caffe").rglob("*.py"), ROOT / "examples" / "dream.ipynb"]
    for path in sources:
        found |= set(
            re.findall(
                r"environ(?:\.get|\.setdefault)?[(\[]\\?[\"']([A-Z][A-Za-z0-9_]+)", path.read_text()
            )
        )
    for path in [*ROOT.joinpath("scripts").glob("*.sh"), ROOT / ".ci" / "run"]:
        found |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):[-?]", path.read_text()))
    makefile = (ROOT / "Makefile").read_text()
    assigned = set(re.findall(r"^([A-Z_]+) :?=", makefile, re.M))
    found |= set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", makefile)) - assigned
    found |= set(re.findall(r"^([A-Z_]+) \?=", makefile, re.M))
    return found - {"HOME", "MAKEFILE_LIST"}  # not read from the environment by us


def test_docs_document_every_environment_variable():
    text = (ROOT / "docs" / "setup.md").read_text()
    table = text[text.index("## Environment variables") :]
    table = table.split("\n## ")[0]  # up to the next section, if any
    documented = set(re.findall(r"`([A-Z][A-Za-z0-9_]+)`", table))
    read = variables_read()
    assert {
        "CUDA_CMAKE_FLAGS",
        "SETUP_PYTHON",
        "VENV",
        "DEEPDREAM_CAFFE_MIRROR",
        "DEEPDREAM_CAFFE_EXAMPLE_WEIGHTS",
        "GLOG_minloglevel",
        "NO_TORCH",
    } <= read
    assert read <= documented, read - documented
