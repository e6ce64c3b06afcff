"""The process boundary around Caffe (deepdream_caffe/worker.py), and the plan's "once".

Whatever happens to the process that holds the net (an abort, a crash, a hang, a signal), the
command ends with one line, writes nothing and changes no input. A default dream parses its
definition with one upgrade child and opens its weights file at most twice.
"""

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
from helpers import CLI, Snapshot, assert_refused

from deepdream_caffe import worker
from deepdream_caffe.errors import DreamError


@pytest.fixture
def scene(nets, tmp_path):
    """A folder holding an input image, the definition and the weights; the dream's command."""
    definition, weights = nets["bvlc_googlenet"]
    for source in (definition, weights):
        shutil.copy(source, tmp_path / Path(source).name)
    rng = np.random.RandomState(0)
    PIL.Image.fromarray(rng.randint(0, 256, (180, 240, 3)).astype(np.uint8)).save(
        tmp_path / "in.png"
    )
    out = tmp_path / "out"
    out.mkdir()
    command = [
        *CLI,
        "dream",
        str(tmp_path / "in.png"),
        "-o",
        str(out / "dream.png"),
        "--raw",
        str(out / "dream.npy"),
        "--model-def",
        str(tmp_path / Path(definition).name),
        "--weights",
        str(tmp_path / Path(weights).name),
        "--seed",
        "0",
    ]
    return tmp_path, out, command


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def child_of(proc, wait_s=120.0, cpu_s=1.0) -> int:
    """The Caffe child of a running command, once it has one and has used ``cpu_s`` seconds
    of CPU."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for pid in children(proc.pid):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            # a fork of the command (not the upgrade tool), past its first second of CPU
            if b"deepdream_caffe" in cmdline and int(fields[11]) >= cpu_s * os.sysconf(
                "SC_CLK_TCK"
            ):
                return pid
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the command never started its Caffe process")


def assert_contained(proc, before, pattern, codes=(1,)):
    """The refusal contract (one line matching ``pattern``, nothing written, no input
    changed), for a command stopped from outside."""
    _, stderr = proc.communicate(timeout=120)
    done = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    line = assert_refused(done, before=before, codes=codes)
    assert re.search(pattern, line), line


@pytest.mark.parametrize("signum", [signal.SIGSEGV, signal.SIGABRT, signal.SIGFPE])
def test_a_crash_of_the_caffe_process_ends_in_one_line(scene, signum):
    tmp_path, out, command = scene
    before = Snapshot(tmp_path)
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    os.kill(child_of(proc), signum)
    assert_contained(proc, before, f"Caffe stopped: .*{signum.name}")


def test_a_silent_caffe_process_is_ended_after_the_timeout(scene):
    tmp_path, out, command = scene
    before = Snapshot(tmp_path)
    # stopped early (a tenth of a second of CPU: past the fork, so not a child on its way to
    # exec the upgrade tool): waiting for a whole second, a loaded machine could let the
    # limit pass first (a child slow to load its net is ended too: rightly, but not this test)
    env = {**os.environ, worker.TIMEOUT_VARIABLE: "5"}
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
    child = child_of(proc, cpu_s=0.1)
    os.kill(child, signal.SIGSTOP)  # a hang, as far as the parent can tell
    assert_contained(proc, before, "Caffe stopped: no progress for 5 s")
    assert not Path(f"/proc/{child}").exists()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_command_ends_its_caffe_process(scene, signum):
    tmp_path, out, command = scene
    before = Snapshot(tmp_path)
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    child = child_of(proc)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    assert re.fullmatch(r"deepdream-caffe: (terminated|interrupted); [^\n]*\n", stderr), stderr
    before.assert_unchanged()
    assert not Path(f"/proc/{child}").exists()


def test_the_caffe_process_dies_with_a_killed_command(scene):
    """SIGKILL gives the command no chance to end its child: the kernel does
    (PR_SET_PDEATHSIG), so nothing goes on computing for nobody."""
    tmp_path, out, command = scene
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    child = child_of(proc)
    os.kill(child, signal.SIGSTOP)  # so that no failed write to the pipe ends it instead
    proc.kill()
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # a zombie for its new parent to reap at most
        with contextlib.suppress(OSError):
            if Path(f"/proc/{child}/stat").read_text().rpartition(")")[2].split()[0] == "Z":
                break
    state = Path(f"/proc/{child}/stat")
    assert not state.exists() or state.read_text().rpartition(")")[2].split()[0] == "Z"


def test_a_bad_timeout_is_one_line(scene):
    tmp_path, out, command = scene
    before = Snapshot(tmp_path)
    for value in ("soon", "0", "-1", "nan", "inf"):
        env = {**os.environ, worker.TIMEOUT_VARIABLE: value}
        proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env=env)
        assert_contained(proc, before, worker.TIMEOUT_VARIABLE)


# --- the boundary itself, with stand-ins for Caffe's part ------------------------------
def _abort(send):
    sys.stderr.write("F1206 10:00:00.000000  4242 blob.cpp:133] Check failed: data_\n")
    sys.stderr.write("*** Check failure stack trace: ***\n    @     0x7f0 (unknown)\n")
    sys.stderr.flush()
    os.abort()


def _refuse(send):
    raise DreamError("a problem", "a fix")


def _bug(send):
    raise ValueError("an unexpected\nvalue")


def _talk(send, n):
    for i in range(n):
        send(("step", i))
    return np.arange(n)


def test_caffe_s_fatal_line_is_the_message():
    with pytest.raises(DreamError) as e:
        worker.run(_abort)
    assert str(e.value).startswith(
        "Caffe stopped: Check failed: data_ (blob.cpp:133) (killed by SIGABRT)"
    )
    assert "\n" not in str(e.value)


def test_a_refusal_in_the_child_is_the_same_refusal():
    with pytest.raises(DreamError) as e:
        worker.run(_refuse)
    assert (e.value.problem, e.value.fix) == ("a problem", "a fix")


def test_an_unexpected_exception_in_the_child_is_one_line_with_its_traceback_kept():
    with pytest.raises(worker.InternalError) as e:
        worker.run(_bug)
    assert str(e.value) == "ValueError: an unexpected"
    assert "Traceback" in e.value.details and "_bug" in e.value.details


def test_messages_arrive_in_order_and_the_result_comes_back():
    heard = []
    result = worker.run(_talk, 5, on_message=heard.append)
    assert heard == [("step", i) for i in range(5)]
    np.testing.assert_array_equal(result, np.arange(5))


def _linger_after_done(send, seconds):
    """Send the result, then take ``seconds`` to end (as a child tearing down a net does)."""
    real_exit = os._exit

    def slow_exit(code):  # this forked child's own exit: nothing else sees it
        time.sleep(seconds)
        real_exit(code)

    os._exit = slow_exit
    send(("pid", os.getpid()))
    return 42


def _sleep(send, seconds, pid_file):
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)


def test_the_result_is_taken_as_it_arrives_and_the_child_is_waited_for_later():
    heard = []
    t0 = time.monotonic()
    assert worker.run(_linger_after_done, 3.0, on_message=heard.append) == 42
    assert time.monotonic() - t0 < 3.0  # not held up by the child's end
    (pid,) = [m[1] for m in heard]
    assert Path(f"/proc/{pid}").exists()
    worker.wait_for_children()
    assert time.monotonic() - t0 >= 3.0
    with pytest.raises(ChildProcessError):  # reaped: no zombie left behind
        os.waitpid(pid, os.WNOHANG)


def test_a_result_is_kept_where_no_thread_can_start_to_wait_for_the_child(monkeypatch):
    start = worker.threading.Thread.start

    def refuse(self):  # the reaper only: the child's Caffe thread starts as ever
        if self.name.startswith("reap"):
            raise RuntimeError("can't start new thread")
        start(self)

    monkeypatch.setattr(worker.threading.Thread, "start", refuse)
    t0 = time.monotonic()
    assert worker.run(_linger_after_done, 1.0) == 42
    assert time.monotonic() - t0 >= 1.0  # waited for here instead


def test_with_verbose_the_child_s_whole_log_is_waited_for():
    t0 = time.monotonic()
    assert worker.run(_linger_after_done, 1.0, verbose=True) == 42
    assert time.monotonic() - t0 >= 1.0


@pytest.mark.parametrize("work", [_abort, _refuse, _sleep])
def test_the_parent_s_check_meanwhile_decides_and_ends_the_child(work, tmp_path):
    """A check the parent makes while the child works (the weights' fit) ends the child when
    it fails, and its error is the one raised, whether the child has failed already (its
    Caffe aborted on those weights, say) or is still at work."""
    pid_file = tmp_path / "pid"
    args = (60, pid_file) if work is _sleep else ()

    def check():
        deadline = time.monotonic() + 30
        while work is _sleep and not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)  # the other children have failed by now
        raise DreamError("the check failed", "a fix")

    t0 = time.monotonic()
    with pytest.raises(DreamError) as e:
        worker.run(work, *args, meanwhile=check)
    assert (e.value.problem, e.value.fix) == ("the check failed", "a fix")
    assert time.monotonic() - t0 < 30
    if work is _sleep:
        assert not Path(f"/proc/{pid_file.read_text()}").exists()


def test_a_check_meanwhile_that_passes_lets_the_result_through():
    ran = []
    assert worker.run(_linger_after_done, 0.0, meanwhile=lambda: ran.append(1)) == 42
    assert ran == [1]


# A command whose Caffe process takes 1.5 s to end after its result (a net's teardown, longer)
LINGERING = """
import os, sys, time
from deepdream_caffe import cli, worker
from deepdream_caffe.errors import DreamError

def linger(send):
    real_exit = os._exit
    def slow_exit(code):
        time.sleep(1.5)
        real_exit(code)
    os._exit = slow_exit
    return 42

def cmd_info(args):
    assert worker.run(linger) == 42
    if outcome == "refused":  # as a result that holds NaN is, once it has come
        raise DreamError("refused after the result came", "a fix")

outcome = sys.argv[1]
cli.cmd_info = cmd_info
sys.argv = ["deepdream-caffe", "info"]
cli.run()
"""
# Runs a program and counts the processes it left behind: orphans come to a subreaper
SUBREAPER = """
import ctypes, os, subprocess, sys
ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
p = subprocess.run([sys.executable, "-c", *sys.argv[1:]], stderr=subprocess.DEVNULL)
orphans = 0
while True:
    try:
        os.waitpid(-1, 0)
    except ChildProcessError:
        break
    orphans += 1
print(p.returncode, orphans)
"""


@pytest.mark.parametrize("outcome", ["done", "refused"])
def test_a_command_ends_after_its_caffe_process(outcome):
    """The result is taken before the Caffe process has ended, but the command does not end
    before it: an orphan would be a zombie wherever nothing reaps them (a container's init)."""
    p = subprocess.run(
        [sys.executable, "-c", SUBREAPER, LINGERING, outcome],
        capture_output=True,
        text=True,
        timeout=60,
    )
    status, orphans = p.stdout.split()
    assert (status, orphans) == ("0" if outcome == "done" else "1", "0"), p.stderr


@pytest.mark.parametrize("closed", [(1, 2), (0, 2), (0, 1), (0, 1, 2)])
def test_a_caller_that_closed_its_streams_still_gets_its_dream(scene, closed):
    """Closed descriptors (``<&- >&- 2>&-``) become sinks: the same dream, exit 0, and the fast
    exit at the end (no module teardown) loses nothing. No file opened later takes their
    numbers: the weights' memory file on 1 or 2 would be replaced by the Caffe process's log,
    and the dream would run on random weights."""
    tmp_path, out, command = scene
    command = [*command, "--octave-n", "1", "--iter-n", "2"]
    subprocess.run(command, capture_output=True, check=True, timeout=300)
    expected = np.load(out / "dream.npy")
    for name in os.listdir(out):
        os.remove(out / name)

    def close_streams():
        for fd in closed:
            os.close(fd)

    done = subprocess.run(command, preexec_fn=close_streams, timeout=300)
    assert done.returncode == 0
    np.testing.assert_array_equal(np.load(out / "dream.npy"), expected)
    record = json.loads((out / "dream.png.json").read_text())
    for name, path in (("raw", out / "dream.npy"), ("image", out / "dream.png")):
        assert record["outputs"][name]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


# --- resolve once: counted with strace --------------------------------------------------
@pytest.mark.parametrize(
    "net", [["--model", "bvlc_googlenet"], ["--model", "bvlc_googlenet", "--notebook-net"], []]
)
def test_a_default_dream_parses_once_and_reads_its_weights_once(scene, net):
    """One upgrade child, and the weights file opened at most twice (here once: Caffe reads
    the same bytes from a memory file): with the published architecture (its definition from
    Caffe's source, the weights given), with the notebook's net, and with --model-def."""
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (tests/apt-packages.txt installs it)")
    tmp_path, out, command = scene
    if net:  # the published definition instead of --model-def
        at = command.index("--model-def")
        command = command[:at] + command[at + 2 :] + net
    log = tmp_path.parent / "strace.log"
    weights = command[command.index("--weights") + 1]
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=execve,open,openat", "-o", str(log), *command],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    trace = log.read_text()
    upgrades = [
        line
        for line in trace.splitlines()
        if "execve(" in line and "upgrade_net_proto_text" in line
    ]
    opens = [line for line in trace.splitlines() if "open" in line and f'"{weights}"' in line]
    assert len(upgrades) == 1, upgrades
    assert 1 <= len(opens) <= 2, opens
    assert (out / "dream.png").is_file()


def test_openmp_variables_that_shrink_teams_do_not_hang_the_dream(scene):
    """OMP_DYNAMIC=true, an OMP_THREAD_LIMIT below --threads or OMP_MAX_ACTIVE_LEVELS=0 give
    a parallel region fewer threads than OpenBLAS's threaded GEMM asks for, and OpenBLAS's
    threads then wait forever for the rest (the dream hung at 2 and 3 threads, pristine build
    too, until the 600 s limit). The package sets them aside before Caffe loads: the dream
    ends, with the bits of a run without them."""
    tmp_path, out, command = scene
    args = [*command, "--octave-n", "2", "--iter-n", "1", "--threads", "3"]
    shrinking = {"OMP_DYNAMIC": "true", "OMP_THREAD_LIMIT": "1", "OMP_MAX_ACTIVE_LEVELS": "0"}
    runs = {}
    for given in [None, *shrinking]:
        env = {k: v for k, v in os.environ.items() if k not in shrinking}
        if given:
            env.update({given: shrinking[given], "DEEPDREAM_CAFFE_TIMEOUT": "60"})
        p = subprocess.run(args, capture_output=True, text=True, timeout=200, env=env)
        assert p.returncode == 0, f"{given}: {p.stderr}"
        runs[given] = np.load(out / "dream.npy").tobytes()
        for name in os.listdir(out):
            os.remove(out / name)
    assert all(run == runs[None] for run in runs.values())


def test_a_process_that_ran_caffe_on_two_threads_can_still_dream(scene, nets):
    """GNU OpenMP's thread pool does not survive a fork: the forked copy of a thread that ran
    a parallel region waits forever in its next one. The child runs its work on a new thread
    (worker.py), so a process that ran Caffe itself (a test, a notebook) still gets its dream,
    with the same bits as a command that ran nothing before."""
    tmp_path, out, command = scene
    definition, weights = nets["bvlc_googlenet"]
    fresh = subprocess.run(
        [*command, "--threads", "2"], capture_output=True, text=True, timeout=300
    )
    assert fresh.returncode == 0, fresh.stderr
    expected = np.load(out / "dream.npy")
    for name in os.listdir(out):
        os.remove(out / name)
    args = [*command[command.index("dream") :], "--threads", "2"]
    script = f"""
import sys
from deepdream_caffe import cli, environment
from deepdream_caffe.models import IMAGENET_MEAN_BGR
from deepdream_caffe.net import load_net
environment.set_blas_threads(2)
net = load_net({str(definition)!r}, {str(weights)!r}, "inception_4c/output", IMAGENET_MEAN_BGR)
net.blobs["data"].reshape(1, 3, 64, 64)
net.forward()  # OpenMP's pool now belongs to this thread
net.backward()
sys.exit(cli.main({args!r}))
"""
    p = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, worker.TIMEOUT_VARIABLE: "60"},
    )
    assert p.returncode == 0, p.stderr
    assert np.array_equal(np.load(out / "dream.npy"), expected)
