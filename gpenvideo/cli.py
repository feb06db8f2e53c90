"""Command line: parses arguments into config dataclasses and is the only place that prints
to the user or exits. Errors become one line on stderr and an exit code (2 bad input,
1 internal failure, 130 interrupted); --debug shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import os
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__
from .config import OPTIONS, Option, RestoreConfig, apply_options, load_config
from .errors import Cancelled, GpenVideoError, InputError
from .quality import format_track_table

# Signals that stop a run the way Ctrl-C does: `docker stop`, systemd, `timeout` (SIGTERM),
# a closed terminal (SIGHUP). The exit code is 128 + the signal's number, as the shell reports.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class _ArgParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other bad input."""

    def error(self, message: str, prog: str | None = None) -> None:  # type: ignore[override]
        sys.stderr.write(f"gpenvideo: error: {message} (see {prog or self.prog} --help)\n")
        raise SystemExit(2)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        """As argparse's, but leftover arguments point at the help of the (sub)command they
        were given to, not the top level's."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}",
                       getattr(parsed, "_help_prog", None))
        return parsed


def _count(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least `least` (argparse names the option when it
    refuses one)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"{value} is not valid: give {least} or more")
        return value

    parse.__name__ = "count"
    return parse


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file of settings (see configs/default.toml)")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar or summary")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")


def _ids(text: str) -> tuple[int, ...]:
    """'1,3' -> (1, 3): track ids for --faces / --skip-faces."""
    try:
        ids = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        ids = ()
    if not ids or min(ids) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give track ids (1, 2, ...) separated by "
                                         "commas, as `gpenvideo track` shows them")
    return ids


def _add_option(p: argparse.ArgumentParser, option: Option) -> None:
    """One config.OPTIONS entry as an argparse option (its default None: the config's)."""
    flag = f"--{option.name}"
    if option.kind in ("flag", "negated-flag"):
        p.add_argument(flag, action="store_true", default=None, help=option.help)
    elif option.kind == "bool":
        p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                       help=option.help)
    elif option.kind == "choice":
        kind = type(option.choices[0])
        p.add_argument(flag, type=kind, choices=option.choices, help=option.help)
    else:
        kinds = {"int": int, "count": _count(0), "float": float, "str": str, "path": Path,
                 "ids": _ids}
        p.add_argument(flag, type=kinds[option.kind], help=option.help)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgParser(prog="gpenvideo",
                        description="Restore faces in videos with GPEN, keeping audio and timing.")
    parser.add_argument("--version", action="version", version=f"gpenvideo {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgParser)

    r = sub.add_parser("restore", help="restore the faces of a video")
    r.add_argument("inputs", type=Path, nargs="+", metavar="INPUT",
                   help="video files, folders (searched recursively for videos) or .txt lists "
                        "of files")
    r.add_argument("-o", "--output",
                   help="output file, or folder (a name ending in / or without a suffix; "
                        "created when missing; mirrors input folders); default: "
                        "<name>_restored.<ext> beside each input")
    r.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (also those finished with the same settings)")
    r.add_argument("--ray", nargs="?", const="", metavar="ADDRESS",
                   help="render segments on a Ray cluster, one GPU per worker (ADDRESS as for "
                        "ray.init, e.g. auto; none: start Ray on this machine); needs "
                        "pip install 'gpenvideo[ray]'")
    r.add_argument("--report", type=Path,
                   help="write the batch report to REPORT.json and REPORT.csv (default for "
                        "several inputs: gpenvideo-report-<time> in the output or input folder)")
    r.add_argument("--identity", action="store_true",
                   help="decode and re-encode only, no face work (checks I/O and timing)")
    for option in OPTIONS:
        _add_option(r, option)
    _add_common(r)

    v = sub.add_parser("preview", help="restore a few moments and show them before | after in "
                                       "a contact sheet (PNG)")
    v.add_argument("input", type=Path, help="video file")
    v.add_argument("-o", "--output", type=Path,
                   help="the sheet, .png (default <name>_preview.png beside the input)")
    v.add_argument("--count", type=int, default=6,
                   help="moments spread over the film where faces are (default 6)")
    v.add_argument("--at", help="these moments instead, e.g. 0:12,1:40.5 (m:ss or seconds)")
    v.add_argument("--strength", help="share of the restored face, 0-1; several, e.g. "
                                      "0.5,0.8,1, give one 'after' column each")
    v.add_argument("--clip", type=float, default=0.0, metavar="SECONDS",
                   help="also write a side-by-side MP4 (before | after) of this many seconds "
                        "at the first moment, beside the sheet")
    v.add_argument("--tracks", type=Path, metavar="JSON",
                   help="the output of `gpenvideo track` for this film: faces are labelled with "
                        "its whole-film track ids, the ids --faces/--skip-faces take")
    v.add_argument("--overwrite", action="store_true", help="replace an existing sheet/clip")
    for option in OPTIONS:
        if "preview" in option.commands:
            _add_option(v, option)
    _add_common(v)

    t = sub.add_parser("track", help="detect and track faces, write their landmarks as JSON")
    t.add_argument("input", type=Path, help="video file")
    t.add_argument("-o", "--output", type=Path, required=True, help="JSON file to write")
    for option in OPTIONS:
        if "track" in option.commands:
            _add_option(t, option)
    _add_common(t)

    w = sub.add_parser("weights", help="list, fetch or verify model files")
    wsub = w.add_subparsers(dest="weights_command", required=True, parser_class=_ArgParser)
    wl = wsub.add_parser("list", help="known models, where they are looked for, present or not")
    wl.add_argument("--weights-dir", type=Path, help="folder searched first")
    wf = wsub.add_parser("fetch", help="download a known model (resumes, verifies)")
    wf.add_argument("name", help="model name from `gpenvideo weights list`")
    wf.add_argument("--weights-dir", type=Path, help="folder to download into")
    wf.add_argument("--url", action="append", help="download from this address instead")
    wf.add_argument("--force", action="store_true", help="download even if present")
    wv = wsub.add_parser("verify", help="say which GPEN model a checkpoint is, or why not")
    wv.add_argument("path", type=Path)
    for p in (wl, wf, wv):
        p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
        p.add_argument("--quiet", "-q", action="store_true", help="print less")
    for p in (r, t, w, wl, wf, wv):  # the innermost command given sets it last
        p.set_defaults(_help_prog=p.prog)
    return parser


def config_from_args(args: argparse.Namespace) -> RestoreConfig:
    """Merge --config and the command-line options into a validated RestoreConfig."""
    cfg = apply_options(load_config(args.config),
                        {o.keyword: getattr(args, o.keyword, None) for o in OPTIONS})
    if getattr(args, "quiet", False):
        cfg = cfg.replace("pipeline", progress=False)
    return cfg


class _WarningPrinter(logging.Handler):
    """Prints the package's warnings as one line each and keeps them (the summary of a file
    leaves out the notes already printed while it ran)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.printed: list[str] = []  # the messages, in order

    def emit(self, record: logging.LogRecord) -> None:
        self.printed.append(record.getMessage())
        _clear_line()
        kind = "error" if record.levelno >= logging.ERROR else "warning"
        sys.stderr.write(f"gpenvideo: {kind}: {record.getMessage()}\n")


_progress_shown = False


def _clear_line() -> None:
    global _progress_shown
    if _progress_shown:
        sys.stderr.write("\r\033[K")
        _progress_shown = False


def _print_progress(p) -> None:  # p: engine.Progress
    global _progress_shown
    total = f"/{p.frames_total}" if p.frames_total else ""
    pct = f" {100 * p.frames_done / p.frames_total:5.1f}%" if p.frames_total else ""
    eta = f" ETA {_hms(p.eta)}" if p.eta is not None else ""
    faces = f" {p.faces_per_second:6.1f} faces/s" if p.faces_done else ""
    sys.stderr.write(f"\r\033[K{p.frames_done}{total} frames{pct} {p.fps:6.1f} fps{faces}{eta}")
    sys.stderr.flush()
    _progress_shown = True


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def done_line(outcome) -> str:  # outcome: batch.Outcome of a finished file
    """The line saying a file was written: whole-film counts, then the time and speed of this
    run, which after a resume rendered only the segments an earlier run had not finished. The
    time is the file's whole time in this run (opening it and, for the first file, loading the
    model included: batch.Outcome.seconds, as in the sidecar and report); the fps is the
    frames this run rendered over that time."""
    timing = f"{outcome.seconds:.1f} s, set-up included ({outcome.fps:.1f} fps)"
    if outcome.segments_resumed:
        timing = (f"{outcome.segments_resumed} of {outcome.segments} segments reused from an "
                  f"earlier run, the other {outcome.frames - outcome.frames_resumed} frames "
                  f"rendered in {timing}")
    return (f"wrote {outcome.output}: {outcome.frames} frames, {outcome.faces} faces in "
            f"{outcome.tracks} tracks, {timing}"
            + (f", encoded with {outcome.encoder}" if outcome.encoder else ""))


def cmd_restore(args: argparse.Namespace) -> int:
    from . import batch

    cfg = config_from_args(args)
    if args.identity and cfg.composite.upscale != 1:
        raise InputError("--identity copies the frames as they are; leave out --upscale")
    jobs = batch.collect(args.inputs, args.output)
    several = len(jobs) > 1 or any(p.is_dir() for p in args.inputs)
    show = cfg.pipeline.progress and sys.stderr.isatty()

    printer = next((h for h in logging.getLogger("gpenvideo").handlers
                    if isinstance(h, _WarningPrinter)), None)
    before = [0]  # how many warnings had been printed when the current file started

    def on_start(number: int, total: int, source: Path) -> None:
        before[0] = len(printer.printed) if printer else 0
        if several and not args.quiet:
            _clear_line()
            print(f"[{number}/{total}] {source}", flush=True)

    def on_done(outcome) -> None:  # batch.Outcome
        _clear_line()
        if args.quiet:
            return
        if outcome.status == "done":
            print(done_line(outcome))
            if outcome.per_track and not (several or args.report):
                print(format_track_table(outcome.per_track))
            printed = set(printer.printed[before[0]:]) if printer else set()
            for note in outcome.warnings:
                if note not in printed:  # the output's new container: said once, at the start
                    print(f"  note: {note}")
        elif outcome.status == "skipped":
            print(f"skipped {outcome.input}: {outcome.output} is already complete with these "
                  "settings (--overwrite to redo it)")
        elif outcome.status == "busy":
            print(f"skipped {outcome.input}: another gpenvideo run is writing {outcome.output}")

    outcomes: list = []
    report_failed = False
    try:
        outcomes = batch.run_batch(jobs, cfg, identity=args.identity, overwrite=args.overwrite,
                                   progress=_print_progress if show else None,
                                   on_start=on_start,
                                   on_done=lambda o: (outcomes.append(o), on_done(o)),
                                   ray_address=args.ray, debug=args.debug)
    finally:
        if (several or args.report) and outcomes:
            output = Path(args.output) if args.output is not None else None
            prefix = args.report or batch.default_report_prefix(args.inputs, output)
            if not args.quiet:
                print(batch.summary_table(outcomes))
            try:
                json_path, csv_path = batch.write_report(outcomes, prefix)
            except OSError as exc:
                _clear_line()
                sys.stderr.write(f"gpenvideo: error: {prefix}: cannot write the report "
                                 f"({exc.strerror or exc}); give --report a writable place\n")
                report_failed = True
            else:
                if not args.quiet:
                    print(f"report: {json_path} and {csv_path}")
    return batch.exit_code(outcomes) or (2 if report_failed else 0)


def cmd_weights(args: argparse.Namespace) -> int:
    from .models import weights

    if args.weights_command == "list":
        dirs = weights.search_dirs(args.weights_dir)
        print("searched, in order: " + ", ".join(str(d) for d in dirs))
        for entry in weights.known_weights().values():
            try:
                path = weights.find(entry.name, args.weights_dir)
            except GpenVideoError:
                print(f"{entry.name:26} missing  {entry.file}")
                continue
            size = path.stat().st_size
            print(f"{entry.name:26} present  {path}  {size / 1e6:.1f} MB  "
                  f"sha256 {weights.sha256_of(path)}")
        return 0
    if args.weights_command == "fetch":
        show = sys.stderr.isatty() and not args.quiet

        def bar(done: int, total: int | None) -> None:
            if show:
                pct = f" {100 * done / total:5.1f}%" if total else ""
                sys.stderr.write(f"\r\033[K{args.name}: {done / 1e6:.1f} MB{pct}")

        path = weights.fetch(args.name, args.weights_dir, urls=args.url, progress=bar,
                             force=args.force)
        if show:
            sys.stderr.write("\n")
        print(f"{args.name}: {path} (sha256 {weights.sha256_of(path)})")
        return 0
    name, cfg = weights.verify(args.path)
    print(f"{args.path}: {name} (size {cfg.size}, channel_multiplier {cfg.channel_multiplier}, "
          f"narrow {cfg.narrow:g}, style_dim {cfg.style_dim}, n_mlp {cfg.n_mlp})")
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from . import api

    doc = api.track_video(args.input, args.output, config=config_from_args(args))
    if not args.quiet:
        print(f"wrote {args.output}: {len(doc['frames'])} frames, {doc['tracks']} tracks")
        print(format_track_table(doc["per_track"], flicker=False))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from .preview import clock, parse_strengths, parse_times, preview

    strengths = parse_strengths(args.strength) if args.strength else None
    args.strength = strengths[0] if strengths else None
    cfg = config_from_args(args)
    at = parse_times(args.at) if args.at else None
    result = preview(args.input, args.output, cfg, count=args.count, at=at, strengths=strengths,
                     clip=args.clip, overwrite=args.overwrite, tracks=args.tracks)
    if not args.quiet:
        faces = sum(len(m.faces) for m in result.moments)
        with_faces = sum(1 for m in result.moments if m.faces)
        print(f"wrote {result.sheet}: {len(result.moments)} moments ({with_faces} with faces), "
              f"{faces} faces; {result.decoded} frames decoded in {result.seconds:.1f} s")
        if result.clip:
            print(f"wrote {result.clip}: before | after, {args.clip:g} s from "
                  f"{clock(result.moments[0].seconds)}")
            if result.per_track:
                print(format_track_table(result.per_track))
        for note in result.notes:
            print(f"  note: {note}")
        print(f"a full restore of {args.input.name} would take about {_hms(result.estimate)} "
              "on this machine at the speed just measured (encoding not included)")
        if not args.tracks:
            print("track ids (#N) are this preview's own; for the whole-film ids that "
                  "--faces/--skip-faces take, run `gpenvideo track` and pass --tracks")
    return 0


COMMANDS = {"restore": cmd_restore, "weights": cmd_weights, "track": cmd_track,
            "preview": cmd_preview}


def _stop_on_signals(received: list[int]) -> dict[int, object]:
    """Make STOP_SIGNALS stop the run as Ctrl-C does (KeyboardInterrupt in the main thread, so
    every thread is stopped and joined, the partial output and the lock removed), recording
    the signal in `received`; a second one while cleaning up is ignored. Returns the handlers
    to restore (none when not on the main thread, where signals cannot be handled)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame: object) -> None:
        if not received:
            received.append(signum)
            raise KeyboardInterrupt

    previous = {}
    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, stop)
    return previous


def _stdout_closed() -> bool:
    """Whether stdout is a pipe whose reader has gone (`gpenvideo weights list | head -1`):
    poll reports an error on its write end."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (OSError, ValueError, AttributeError):  # no file (a test's capture), no poll
        return False
    return any(event & select.POLLERR for _, event in events)


def _quiet_on_closed_stdout() -> int:
    """After the reader of stdout went away: point stdout at /dev/null, so that Python's own
    flush at exit says nothing either, and return 141 (128 + SIGPIPE, as the shell reports a
    command a closed pipe stopped)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout is no file (a test's capture)
        pass
    return 128 + signal.SIGPIPE


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `gpenvideo` console script. Returns the process exit code."""
    args = build_parser().parse_args(argv)
    handler = _WarningPrinter()
    logger = logging.getLogger("gpenvideo")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    received: list[int] = []
    previous = _stop_on_signals(received)
    try:
        return COMMANDS[args.command](args)
    except (Cancelled, KeyboardInterrupt) as exc:
        _clear_line()
        text = str(exc) if isinstance(exc, Cancelled) else "interrupted"
        if received:
            name = signal.Signals(received[0]).name
            sys.stderr.write(f"gpenvideo: stopped by {name}: {text}\n")
            return 128 + received[0]
        sys.stderr.write(f"gpenvideo: {text}\n")
        return 130
    except GpenVideoError as exc:
        _clear_line()
        if args.debug:
            raise
        sys.stderr.write(f"gpenvideo: error: {exc}\n")
        return exc.exit_code
    except Exception as exc:  # an internal failure: say what and how to see more
        if isinstance(exc, BrokenPipeError) and _stdout_closed():  # `... | head`: not ours
            return _quiet_on_closed_stdout()
        _clear_line()
        if args.debug:
            raise
        sys.stderr.write(f"gpenvideo: internal error: {type(exc).__name__}: {exc} "
                         "(run again with --debug for the traceback)\n")
        return 1
    finally:
        logger.removeHandler(handler)
        for sig, old in previous.items():
            signal.signal(sig, old)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
