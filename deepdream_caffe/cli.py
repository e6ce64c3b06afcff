"""The ``deepdream-caffe`` command: the dispatch, nothing else (its parser: ``parser.py``).

Each subcommand turns its flags into a :class:`~deepdream_caffe.job.Job` (dream, guide, zoom)
or one call into the module that does the work. Every failure a user can cause ends with one
line on stderr: exit status 1, or 2 for flags that make no sense (``--debug`` shows the
traceback). Ctrl-C and SIGTERM, from the first instant, end with one line too.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import sys


def _stopped_while_starting(signum, frame):
    # os._exit, not an exception: raised inside an import's C code, an exception can come out
    # as another one (numpy turned it into an ImportError and a traceback); nothing is open yet
    sys.stderr.write("deepdream-caffe: interrupted while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(128 + signum)


if __name__ == "__main__" or sys.argv[0].endswith("deepdream-caffe"):  # the program, not a test
    # installed before the imports below, which take a noticeable fraction of a second
    signal.signal(signal.SIGINT, _stopped_while_starting)
    signal.signal(signal.SIGTERM, _stopped_while_starting)

import json  # noqa: E402

from . import environment, models, report, worker  # noqa: E402
from .errors import DreamError  # noqa: E402
from .imageio import all_or_nothing  # noqa: E402
from .interrupts import interrupt  # noqa: E402
from .job import Job, log_to_stderr, run_dream, run_zoom  # noqa: E402
from .parser import build_parser, check_combinations  # noqa: E402


# --- the subcommands: each turns its flags into a job or a call ------------------------
def cmd_dream(args):
    run_dream(Job.from_values(args))


cmd_guide = cmd_dream  # the guide image makes the difference


def cmd_zoom(args):
    run_zoom(Job.from_values(args))


def cmd_draw(args):
    from .drawjob import DrawJob, run_draw

    run_draw(DrawJob.from_values(args))


def cmd_video(args):
    from .videojob import Carry, run_video

    run_video(Job.from_values(args), Carry(args.blend, args.flow, args.layers), args.frames_dir)


def cmd_sweep(args):
    from . import sweep

    sweep.run_command(args, say=log_to_stderr)


def cmd_layers(args):
    from .definition import read_definition

    definition = args.model_def or models.model_definition(
        models.get_model(args.model), say=log_to_stderr
    )
    model = read_definition(definition, args.allow_python_layers)
    print("\n".join(report.layer_table(model, args.size)))


def cmd_fetch(args):
    for path in models.fetch_named(args.what, say=log_to_stderr):
        print(path)


def cmd_info(args):
    info = environment.environment(with_caffe=False)
    try:
        info.update(environment.caffe_environment())
    except DreamError as e:  # info still reports the rest, and what is missing
        info["caffe"] = f"missing: {e}"
    if args.json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        print(f"{key:22s} {value}")


def cmd_export_golden(args):
    from .lab.bundle import export_job

    export_job(Job.from_values(args), args.output, args.size, say=log_to_stderr)


def cmd_compare(args):
    from .lab import bundle

    if args.report:
        bundle.check_report(args.report, args.bundle, args.other)
    result = bundle.compare(args.bundle, args.other, args.require)
    text = bundle.markdown(result)
    if args.report:
        with all_or_nothing() as batch:
            batch(args.report).write_text(text)
    print(text, end="")
    failure = bundle.verdict_line(result)
    if failure:
        raise DreamError(*failure)


def cmd_verify_notebook(args):
    from .lab.verify import SKIPPED, verify_notebook

    results = verify_notebook(args.seeds, args.cells, args.output, say=log_to_stderr)
    if results is None:
        return SKIPPED
    if not all(r["holds"] for r in results):
        raise DreamError(
            "the notebook's images are not within our seed-to-seed spread for every case",
            f"see {args.output / 'report.md'}",
        )


def cmd_reproduce(args):
    from .reproduce import reproduce

    verdict = reproduce(args.sidecar, say=log_to_stderr)
    print(verdict.line)
    return 0 if verdict.identical else 1


def cmd_bench(args):
    from .lab.bench import bench

    record = bench(
        args.output,
        args.quick,
        args.variants,
        threads=args.threads,
        repeats=args.repeats,
        say=log_to_stderr,
    )
    print((args.output / "bench.md").read_text(), end="")
    if not record["results"]:
        raise DreamError("nothing was timed", "choose --variants that can run here")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # A descriptor the caller closed (<&- >&- 2>&-) becomes /dev/null: a sink, not a crash, and
    # no file opened later takes its number (the Caffe process writes its log onto 1 and 2).
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free number: this one
    sys.stdout = sys.stdout or open(1, "w", closefd=False)  # noqa: SIM115 (open until the exit)
    sys.stderr = sys.stderr or open(2, "w", closefd=False)  # noqa: SIM115
    # from here on a signal is an exception, so that every ``finally`` runs (zoom.json, ...)
    before = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    args = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        check_combinations(parser, args)
        args.command_line = report.command_line(argv)
        # glog reads this once, when libcaffe loads: quiet unless --verbose
        os.environ.setdefault("GLOG_minloglevel", "0" if getattr(args, "verbose", False) else "2")
        status = globals()["cmd_" + args.command.replace("-", "_")](args)
    except DreamError as e:
        if args is not None and args.debug:
            raise
        print(f"deepdream-caffe: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # the disk is full, a folder vanished, ...: still one line
        if args is not None and args.debug:
            raise
        if isinstance(e, BrokenPipeError) and reader_gone(1):
            return quiet_exit_for_closed_stdout()
        print(os_error_line(e), file=sys.stderr)
        return 1
    except worker.InternalError as e:  # an unexpected exception in the Caffe process
        if args is not None and args.debug:
            print(e.details, file=sys.stderr, end="")
        print(f"deepdream-caffe: error: {e} (in the Caffe process)", file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        if args is not None and args.debug:
            raise
        signum = getattr(e, "signum", signal.SIGINT)
        name = "interrupted" if signum == signal.SIGINT else "terminated"
        print(
            f"deepdream-caffe: {name}; finished outputs are kept, no partial file was written",
            file=sys.stderr,
        )
        return 128 + signum
    except Exception as e:  # a bug of ours: still one line; --debug shows where
        if args.debug if args is not None else "--debug" in argv:
            raise
        print(
            f"deepdream-caffe: error: unexpected {type(e).__name__}: {one_line(str(e))} "
            "(a bug in deepdream-caffe: please report it with the --debug output)",
            file=sys.stderr,
        )
        return 1
    finally:
        # worker.run takes a result before its Caffe process has ended: the command ends
        # after it, leaving no orphan (a second Ctrl-C leaves it to the kernel: PDEATHSIG)
        with contextlib.suppress(KeyboardInterrupt):
            worker.wait_for_children()
        for signum, handler in before.items():
            signal.signal(signum, handler)
    return status or 0


OS_ERROR_FIX = "check the path, its permissions and the free space"
# A limit of the process, not a path: the generic fix would send the user looking at paths.
OS_ERROR_FIXES = {
    errno.ENOSPC: "free some space on that disk, or write to another one",
    errno.EDQUOT: "free some space within your disk quota, or write to another disk",
    errno.EFBIG: "raise the file-size limit (ulimit -f), which a file of this run exceeds",
    errno.EMFILE: "raise the open-file limit (ulimit -n) to 64 or more",
    errno.ENFILE: "the system's table of open files is full: end other programs and retry",
    errno.EAGAIN: "a process or thread limit is reached (ulimit -u): raise it, or end other "
    "processes",
    errno.ENOMEM: "free some memory, or raise the address-space limit (ulimit -v)",
    errno.EROFS: "choose a folder on a file system mounted for writing",
}


def os_error_line(e: OSError) -> str:
    return (
        f"deepdream-caffe: error: {e}: {OS_ERROR_FIXES.get(e.errno, OS_ERROR_FIX)}; "
        "no output was left half-written"
    )


def reader_gone(fd: int) -> bool:
    """True if ``fd`` is a pipe whose reading end was closed (``... | head -1``)."""
    poll = select.poll()
    poll.register(fd, select.POLLOUT)
    return any(events & select.POLLERR for _, events in poll.poll(0))


def quiet_exit_for_closed_stdout() -> int:
    """A reader that stopped reading wants no more: no message (there is no one to read
    it, and shells say nothing for their own tools), the status of a death by SIGPIPE."""
    stdout_to_devnull()
    return 128 + signal.SIGPIPE


def stdout_to_devnull() -> None:
    """Descriptor 1 onto /dev/null, after a write to it failed: what Python still holds for
    it goes nowhere at the exit, instead of failing a second time."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def flush_stdout(status: int) -> int:
    """Flush what the command printed. Where Python buffers it (a pipe or a file, without
    PYTHONUNBUFFERED), a failed write shows only here, and ends as a print that fails inside
    the command does, unless the command failed already: a reader that has gone
    (``info | head -1``) quietly, a full disk (``info > /dev/full``) with its one line."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        quiet = quiet_exit_for_closed_stdout()
        return status or quiet
    except OSError as e:
        stdout_to_devnull()
        if status:
            return status
        print(os_error_line(e), file=sys.stderr)
        return 1
    except ValueError:  # a stream closed by the command: nothing is left to write
        pass
    return status


def one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def run() -> None:
    """The program: :func:`main`, then, when nothing else runs in this process (daemon
    threads aside, which an exit abandons anyway), an exit that skips Python's teardown of
    every loaded module (about 70 ms after a dream). By then every output is written and
    closed; the two streams are flushed here."""
    import multiprocessing
    import threading

    try:
        status = main()
    except SystemExit as e:  # argparse: --help, --version, a usage error
        status = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    status = flush_stdout(status)
    others = [t for t in threading.enumerate() if t is not threading.main_thread()]
    if all(t.daemon for t in others) and not multiprocessing.active_children():
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):  # a closed pipe, say: the usual exit reports it
            pass
        else:
            os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    run()
