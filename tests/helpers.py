"""What the tests of the command share: one way to run it, one contract for a refusal.

``run_cli`` runs the command in a process of its own (``python -m deepdream_caffe.cli`` with
the venv's interpreter), as users meet it: a Caffe abort shows as what it is (exit 134), not
as a dead test run. ``main_in_process`` runs ``cli.main`` here, for the tests that monkeypatch
the product (a full disk, a failing rename); both return a ``CompletedProcess``.

The contract for every refusal (``assert_refused``, ``refused``): exit 1, or 2 for flags that
make no sense; exactly one line on stderr, ``deepdream-caffe: error: ...`` naming the problem;
no traceback; nothing written into the watched folders (the output folder, and a private
TMPDIR inside it: no temporary file left) and every file there unchanged, by sha256.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "deepdream_caffe.cli"]
ERROR_LINE = re.compile(r"deepdream-caffe(?: [\w-]+)?: error: ")  # usage: the subcommand's
# Files above this size (the mirror's weights) are compared by their stat, not their sha256:
# size, mtime and inode change with any rewrite, and hashing 50 MB per refusal is slow.
HASHED_BELOW = 8 * 2**20


def run_cli(*args, env=None, cwd=None, timeout=300, umask=None, check=False):
    """The command on ``args`` in a process of its own; stdout and stderr as text. ``env``
    is added to this process's environment; ``check`` asserts exit 0."""
    p = subprocess.run(
        [*CLI, *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=cwd,
        timeout=timeout,
        preexec_fn=None if umask is None else lambda: os.umask(umask),
    )
    if check:
        assert p.returncode == 0, p.stderr
    return p


def main_in_process(*args) -> subprocess.CompletedProcess:
    """``cli.main`` on ``args`` in this process (a usage error's exit included)."""
    from deepdream_caffe import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(map(str, args)))
        except SystemExit as e:
            code = e.code
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


class Snapshot:
    """Every file under some folders: its sha256 (or its stat when large) and its mode."""

    def __init__(self, *folders):
        self.folders = [Path(f) for f in folders]
        self.files = self.take()

    def take(self) -> dict:
        out = {}
        for folder in self.folders:
            for p in sorted(folder.rglob("*")):
                if p.is_file():
                    st = p.stat()
                    if st.st_size < HASHED_BELOW:
                        content = hashlib.sha256(p.read_bytes()).hexdigest()
                    else:
                        content = (st.st_mtime_ns, st.st_ino)
                    out[p] = (st.st_size, st.st_mode, content)
        return out

    def assert_unchanged(self):
        now = self.take()
        written = sorted(str(p) for p in now.keys() - self.files.keys())
        gone = sorted(str(p) for p in self.files.keys() - now.keys())
        changed = sorted(str(p) for p in now.keys() & self.files.keys() if now[p] != self.files[p])
        assert not (written or gone or changed), {
            "written": written,
            "removed": gone,
            "changed": changed,
        }


def assert_refused(p, *words, before: Snapshot | None = None, codes=(1, 2)) -> str:
    """The contract of a refusal on the finished command ``p``; returns its one line."""
    assert p.returncode in codes, (p.returncode, p.stderr[-2000:])
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and ERROR_LINE.match(lines[0]), p.stderr[-2000:]
    if p.returncode == 1:  # not a usage error: the program's own line, not a subcommand's
        assert lines[0].startswith("deepdream-caffe: error: "), lines[0]
    assert "Traceback" not in p.stderr and "invalid parse value" not in p.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    if before is not None:
        before.assert_unchanged()
    return lines[0]


def refused(*args, words=(), watch=(), codes=(1, 2), **run) -> str:
    """Run the command on ``args`` (``run``: run_cli's options) and assert that it refuses:
    the contract, with ``words`` in its line and the folders ``watch`` untouched."""
    before = Snapshot(*watch)
    return assert_refused(run_cli(*args, **run), *words, before=before, codes=codes)
