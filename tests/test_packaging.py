"""Packaging that no build here runs: Dockerfiles, environment.yml, Makefile, README."""

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
    pip.update(pins((ROOT / "requirements-bench.txt").read_text()))
    conda = pins((ROOT / "environment.yml").read_text())
    assert conda == pip


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.cuda"])
def test_dockerfiles_lint_clean_and_use_the_setup_script(name):
    path = ROOT / "docker" / name
    text = path.read_text()
    assert "RUN scripts/setup.sh" in text
    hadolint = shutil.which("hadolint") or str(Path(__import__("sys").executable).parent /
                                               "hadolint")
    p = subprocess.run([hadolint, str(path)], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


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


def test_readme_documents_every_make_target():
    text = (ROOT / "README.md").read_text()
    for target in re.findall(r"^([a-z-]+):.*## ", (ROOT / "Makefile").read_text(), re.M):
        assert f"make {target}" in text, target


def test_ruff_is_clean():
    ruff = Path(__import__("sys").executable).parent / "ruff"
    p = subprocess.run([str(ruff), "check", "deepdream_caffe", "tests"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_pyproject_extras_are_the_requirement_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = {name: pins("\n".join(reqs)) for name, reqs in
              project["optional-dependencies"].items()}
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
        return subprocess.run(["make", "-n", target], cwd=ROOT, capture_output=True,
                              text=True).stdout
    lint = dry("lint")
    assert "ruff check" in lint and "ruff format --check" in lint and "shellcheck scripts/" in lint
    caffe = dry("caffe")
    assert caffe.strip() == "scripts/setup.sh --caffe-only"


def variables_read():
    """Environment variables the code, the notebook, the scripts and the Makefile read."""
    found = set()
    sources = [*ROOT.joinpath("deepdream_caffe").rglob("*.py"), ROOT / "examples" / "dream.ipynb"]
    for path in sources:
        found |= set(re.findall(r"environ(?:\.get|\.setdefault)?[(\[]\\?[\"']([A-Z][A-Za-z0-9_]+)",
                                path.read_text()))
    for path in [*ROOT.joinpath("scripts").glob("*.sh"), ROOT / ".ci" / "run"]:
        found |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):[-?]", path.read_text()))
    makefile = (ROOT / "Makefile").read_text()
    assigned = set(re.findall(r"^([A-Z_]+) :?=", makefile, re.M))
    found |= set(re.findall(r"\$\(([A-Z][A-Z0-9_]*)\)", makefile)) - assigned
    found |= set(re.findall(r"^([A-Z_]+) \?=", makefile, re.M))
    return found - {"HOME", "MAKEFILE_LIST"}  # not read from the environment by us


def test_readme_documents_every_environment_variable():
    text = (ROOT / "README.md").read_text()
    table = text[text.index("## Environment variables"):]
    table = table[:table.index("\n## ")]
    documented = set(re.findall(r"`([A-Z][A-Za-z0-9_]+)`", table))
    read = variables_read()
    assert {"CUDA_CMAKE_FLAGS", "SETUP_PYTHON", "VENV", "DEEPDREAM_CAFFE_MIRROR",
            "DEEPDREAM_CAFFE_EXAMPLE_WEIGHTS", "GLOG_minloglevel", "NO_TORCH"} <= read
    assert read <= documented, read - documented
