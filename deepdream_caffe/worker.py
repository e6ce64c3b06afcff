"""The process boundary: the part of a command that holds a Caffe net runs in a child process.

Caffe ends its process when one of its checks fails (glog's CHECK: SIGABRT), a bad blob can
crash it (SIGSEGV, heap corruption), and nothing stops it looping. So :func:`run` forks a child
that runs one function, "the Caffe part" of a command, and the parent, which owns the user's
files and the one-line message, learns only what the child sends over a pipe: messages while
it works (progress, frames), then its result. Whatever else happens to the child, the parent
ends the command with one line and writes nothing of it:

- a Caffe abort or crash: "Caffe stopped: <Caffe's last fatal log line>" (or the signal);
- a child silent for longer than ``DEEPDREAM_CAFFE_TIMEOUT`` seconds (default 600): killed;
- Ctrl-C or SIGTERM in the parent: the child is killed before the parent goes on;
- a ``DreamError`` in the child: the same one line as in the parent; any other exception:
  one line, and its traceback with ``--debug``.

The child's stdout and stderr (Caffe's log) go to an anonymous memory file that the parent
reads when the child has ended: shown with ``--verbose``, searched for Caffe's fatal line
otherwise. The child inherits the parent's memory (fork), so nothing is loaded twice.

In the child the work runs on a new thread, with the parent's BLAS thread count. Caffe's layers
and its BLAS share GNU OpenMP's thread pool, which belongs to the thread that started it and
does not survive a fork: the child's copy of a thread that ran Caffe before (a test process, a
notebook) would wait forever on pool threads that were not copied. A new thread starts a pool
of its own; OpenMP's thread count is per thread, so it is set again there.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import os
import re
import signal
import sys
import threading
import traceback
from multiprocessing import Pipe

from .errors import DreamError

PR_SET_PDEATHSIG = 1  # prctl(2)
TIMEOUT_VARIABLE = "DEEPDREAM_CAFFE_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds without a message from the child: a net load or one step
# glog's line prefix: severity, date, time, thread, file:line]
GLOG_LINE = re.compile(r"^([IWEF])\d{4,8} [\d:.]+ +\d+ ([^\]]*)\] ?(.*)$")


class InternalError(Exception):
    """An unexpected exception in the child: its one-line summary, and its traceback."""

    def __init__(self, summary: str, details: str):
        super().__init__(summary)
        self.details = details


def timeout() -> float:
    """The seconds the child may go without a message, from ``DEEPDREAM_CAFFE_TIMEOUT``."""
    value = os.environ.get(TIMEOUT_VARIABLE, "")
    if not value:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 1e9:
        raise DreamError(
            f"{TIMEOUT_VARIABLE}={value!r} is not a number of seconds above 0",
            f"unset it (default {DEFAULT_TIMEOUT:.0f}) or give e.g. {TIMEOUT_VARIABLE}=1200",
        )
    return seconds


def run(work, *args, on_message=None, verbose: bool = False, meanwhile=None):
    """``work(send, *args)`` in a child process; return what it returns.

    ``send(message)`` in the child passes a picklable message to ``on_message(message)`` here,
    as it comes. Raises :class:`DreamError` for a child that fails, dies or hangs (see the
    module docstring) and :class:`InternalError` for an unexpected exception in it.

    ``meanwhile()``, where given, runs here once the child has started, before any of its
    messages is taken: work of the parent's that need not hold the child up (a check whose
    failure ends the child, its error raised instead of anything the child reports).

    The child's result is taken as it arrives: the child ends on its own meanwhile (tearing
    down a net's memory takes a while), and is waited for later (:func:`_reap_later`);
    with ``verbose``, whose log must be whole, here.
    """
    limit = timeout()
    log = os.memfd_create("deepdream-caffe-log", os.MFD_CLOEXEC)
    reader, writer = Pipe(duplex=False)
    for stream in (sys.stdout, sys.stderr):  # None where the stream was closed
        if stream is not None:
            stream.flush()
    parent = os.getpid()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        reader.close()
        _child(work, args, writer, log, parent)
    writer.close()
    outcome, result = None, None
    try:
        if meanwhile is not None:
            meanwhile()
        while True:
            if not reader.poll(limit):
                outcome = ("hang", limit)
                break
            try:
                message = reader.recv()
            except (EOFError, OSError):
                break  # the child has ended, or died
            if message[0] == "done":
                outcome, result = message, message[1]
                if not verbose:
                    break  # its last message: the child only ends now
            elif message[0] in ("error", "crash"):
                outcome = message
            elif on_message is not None:
                on_message(message)
    finally:
        reader.close()
        if outcome is not None and outcome[0] == "done" and not verbose:
            _reap_later(pid, log)
        else:
            status = _reap(pid, kill=outcome is None or outcome[0] == "hang")
            text = _read_log(log)
            os.close(log)
            if verbose and text:
                sys.stderr.write(text)
    if outcome is not None and outcome[0] == "done" and (not verbose or status == 0):
        return result
    if outcome is not None and outcome[0] == "error":
        raise DreamError(outcome[1], outcome[2])
    if outcome is not None and outcome[0] == "crash":
        raise InternalError(outcome[1], outcome[2])
    if outcome is not None and outcome[0] == "hang":
        raise DreamError(
            f"Caffe stopped: no progress for {limit:g} s, so it was ended; nothing was written",
            f"set {TIMEOUT_VARIABLE} to more seconds if a step of this size really takes longer",
        )
    raise DreamError(f"Caffe stopped: {why_stopped(status, text)}; nothing was written", FIX)


FIX = "check the definition and the weights (--verbose shows Caffe's log)"


def _child(work, args, writer, log, parent: int) -> None:
    """Run ``work`` and send its outcome; the process ends here, whatever happens."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides, and ends this one
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _end_with(parent)
        os.dup2(log, 1)
        os.dup2(log, 2)
        sys.stdout = open(1, "w", closefd=False)  # Python's prints go there too
        sys.stderr = open(2, "w", closefd=False)
        if faulthandler.is_enabled():  # its dump goes into the log too, not to the terminal
            faulthandler.enable(file=sys.stderr)
        result = _on_new_thread(work, writer.send, *args)
        writer.send(("done", result))
        code = 0
    except DreamError as e:
        with contextlib.suppress(BaseException):
            writer.send(("error", e.problem, e.fix))
    except BaseException as e:  # anything else: reported, then the child ends
        with contextlib.suppress(BaseException):
            summary = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            writer.send(("crash", summary, traceback.format_exc()))
    finally:
        with contextlib.suppress(BaseException):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _end_with(parent: int) -> None:
    """Have the kernel kill this child when the parent dies (even by SIGKILL), rather than
    let it compute for nobody."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before that took effect
        os._exit(1)


def _on_new_thread(work, *args):
    """``work(*args)`` on a new thread (the module docstring says why): its result, or its
    exception raised here."""
    from . import environment

    try:
        threads = environment.blas_threads()  # as the parent set them
    except Exception as e:  # a lookup for the thread count only: say so, and go on
        print(f"deepdream-caffe: Caffe's BLAS thread count unknown ({e})", file=sys.stderr)
        threads = None
    outcome = {}

    def body():
        try:
            if threads:
                environment.set_blas_threads(threads, numpy=False)
            outcome["result"] = work(*args)
        except BaseException as e:  # handed to the child's main thread
            outcome["error"] = e

    thread = threading.Thread(target=body, name="caffe")
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    if "result" not in outcome:
        raise RuntimeError("the Caffe thread ended without a result")
    return outcome["result"]


def _reap(pid: int, kill: bool) -> int:
    """Wait for the child (killing it first if ``kill``); its wait status."""
    if kill:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    while True:
        try:
            return os.waitpid(pid, 0)[1]
        except InterruptedError:
            continue
        except ChildProcessError:
            return 0


def _reap_later(pid: int, log: int) -> None:
    """Wait for a child that has sent its result, and close its log, on a daemon thread: the
    parent goes on meanwhile (``cli.main`` waits for it before the command ends). Where no
    thread can start (a process limit), here and now."""

    def reap():
        _reap(pid, kill=False)
        os.close(log)

    thread = threading.Thread(target=reap, name=f"reap {pid}", daemon=True)
    try:
        thread.start()
    except RuntimeError:  # "can't start new thread": the result is not lost for that
        reap()
        return
    _reaping.append(thread)


_reaping: list = []  # the threads of _reap_later


def wait_for_children() -> None:
    """Wait until every child that :func:`run` left to end on its own has ended (so that
    ``getrusage(RUSAGE_CHILDREN)`` counts it)."""
    while _reaping:
        _reaping.pop().join()


def _read_log(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")


def why_stopped(status: int, log: str) -> str:
    """Caffe's last fatal line (glog's F-line) from ``log``, else the last line, else how the
    child ended."""
    fatal, last = None, None
    for line in log.splitlines():
        line = line.strip()
        if not line or line.startswith("***") or line.startswith("@ "):
            continue  # glog's stack trace
        match = GLOG_LINE.match(line)
        if match and match.group(1) == "F":
            fatal = f"{match.group(3)} ({match.group(2)})"
        elif not match:
            last = line
    if os.WIFSIGNALED(status):
        how = f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    else:
        how = f"exit status {os.waitstatus_to_exitcode(status)}"
    reason = fatal or last
    return f"{reason[:300]} ({how})" if reason else how
