"""``python -m cerebros_service run | validate | serve``: the subprocess JSON protocol.

stdout carries protocol JSON and nothing else. At start the process keeps a private
duplicate of its stdout for the protocol, then points file descriptor 1 at stderr,
so prints, logging and TensorFlow's C++ messages can never corrupt a response.
``--stderr-file PATH`` appends fd 2 to a file before anything else happens (an
Erlang Port reads one stream; this keeps TensorFlow's noise out of it).

Exit codes: 0 success (or valid), 1 failed run, 2 invalid input or usage.
See docs/architecture.md ("Subprocess protocol") and docs/contract.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import threading
from typing import Any, BinaryIO, Callable

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
_LONG_DIGITS = re.compile(rb"[0-9]{19}")  # 2**63 has 19 digits


# --------------------------------------------------------------------------- protocol stream


class ProtocolWriter:
    """Writes whole JSON lines to the original stdout; one lock so event lines never interleave."""

    def __init__(self, fd: int):
        self.stream: BinaryIO = os.fdopen(fd, "wb", buffering=0)
        self.lock = threading.Lock()

    def write_json(self, obj: Any) -> None:
        from .jsonsafe import dumps

        data = dumps(obj) + b"\n"
        with self.lock:
            view = memoryview(data)
            while view:  # an unbuffered write may be partial on a pipe
                written = self.stream.write(view)
                view = view[written or 0:]

    def write_reply(self, request_id: Any, **fields: Any) -> None:
        """One serve line ``{"id": <the id exactly as sent>, **fields}``."""
        from .jsonsafe import dumps

        body = dumps(fields)
        id_text = request_id.text if isinstance(request_id, RawId) else dumps(request_id)
        self._write_line(b'{"id":' + id_text + (b"," + body[1:] if fields else b"}"))

    def _write_line(self, data: bytes) -> None:
        data += b"\n"
        with self.lock:
            view = memoryview(data)
            while view:
                written = self.stream.write(view)
                view = view[written or 0:]

    def write_text(self, text: str) -> None:
        with self.lock:
            self.stream.write(text.encode())


class RawId:
    """A numeric request id kept as the text it was sent as: a float id (``1e400``,
    ``0.1``) comes back digit for digit, not as what a float makes of it."""

    def __init__(self, text: str):
        self.text = text.encode()


def _take_over_stdout(argv: list[str]) -> tuple[ProtocolWriter, dict | None]:
    """Keep the real stdout for the protocol; send fd 1 (and --stderr-file's) to stderr.

    Also answers the failed result for a --stderr-file that cannot be opened (then
    stderr stays where it was)."""
    protocol_fd = os.dup(1)
    failure = None
    stderr_file = _stderr_file_arg(argv)
    if stderr_file:
        try:
            fd = os.open(stderr_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            failure = _usage_failure(f"--stderr-file: cannot open {stderr_file!r} for appending: "
                                     f"{exc.strerror or exc}", ("stderr_file",))
        else:
            os.dup2(fd, 2)
            os.close(fd)
    os.dup2(2, 1)
    sys.stdout.flush()
    return ProtocolWriter(protocol_fd), failure


def _stderr_file_arg(argv: list[str]) -> str | None:
    """Read --stderr-file before argparse runs, so even usage errors land in the file."""
    for index, arg in enumerate(argv):
        if arg == "--stderr-file" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--stderr-file="):
            return arg.split("=", 1)[1]
    return None


# --------------------------------------------------------------------------- arguments


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    help_writer: ProtocolWriter | None = None

    def error(self, message: str):  # raise instead of exit, so a usage error gets a JSON answer
        raise UsageError(f"{self.prog}: {message}")

    def print_help(self, file=None) -> None:
        if file is None and self.help_writer is not None:
            self.help_writer.write_text(self.format_help())
        else:
            super().print_help(file)


def build_parser() -> _Parser:
    parser = _Parser(
        prog="python -m cerebros_service",
        description="Cerebros-style neural architecture search over a JSON protocol on stdin/stdout.",
        epilog="stdout carries only protocol JSON; logs go to stderr. "
               "Exit codes: 0 success, 1 failed run, 2 invalid input or usage.",
    )
    commands = parser.add_subparsers(dest="command",
                                     metavar="{run,validate,serve,predict,export,report,runs}")
    commands.required = True

    run = commands.add_parser(
        "run", help="run one search; input {\"spec\": …, \"opts\": …} on stdin or --input",
        description="Run one search. Input: a JSON object {\"spec\": …, \"opts\": …} on stdin or in "
                    "--input FILE. Output: the result as one JSON document, or with --events JSON "
                    "lines {\"event\": …} … then {\"result\": …}. Exit 0 success, 1 failed run, "
                    "2 invalid input.",
    )
    run.add_argument("--input", metavar="FILE", help="read the request from FILE instead of stdin")
    run.add_argument("--events", action="store_true",
                     help="stream progress events as JSON lines before the result line")
    run.add_argument("--json", action="store_true",
                     help="answer JSON even on a terminal (no progress bar or summary table)")
    _stderr_option(run)
    _operator_options(run)

    check = commands.add_parser(
        "validate", help="check a request without running it (never imports TensorFlow)",
        description="Validate a request {\"spec\": …, \"opts\": …} (stdin or --input FILE) and answer "
                    "{\"status\": \"valid\", \"spec\": …, \"opts\": …} with defaults filled in (exit 0) "
                    "or a failed result with error_type validation_error (exit 2).",
    )
    check.add_argument("--input", metavar="FILE", help="read the request from FILE instead of stdin")
    _stderr_option(check)
    _operator_options(check)

    serve = commands.add_parser(
        "serve", help="long-lived worker: one JSON request per line in, JSON lines out",
        description="Read one request per line: {\"id\": any, \"op\": …, …} and answer one "
                    "{\"id\", \"result\"} line per request. Jobs: op submit (spec, opts, events) "
                    "answers {\"job_id\", \"status\": \"queued\"} at once, then the job sends "
                    "{\"id\", \"job_id\", \"event\"} lines and one {\"id\", \"job_id\", \"done\"} line; "
                    "ops status, cancel, result, jobs, register_dataset, unregister_dataset, "
                    "list_datasets, validate, ping answer at once (docs/architecture.md); op predict "
                    "at once with a run's ONNX model, else as a job in a worker. Op run is "
                    "the older synchronous search in this process. EOF on stdin cancels running jobs "
                    "and ends the worker (exit 0).",
    )
    serve.add_argument("--preload", action="store_true",
                       help="import the search engine (and TensorFlow) before reading requests")
    serve.add_argument("--max-concurrent-jobs", type=int, metavar="N", default=None,
                       help="jobs (op submit) that may run at once, each in its own worker process "
                            "(default 1, or $CEREBROS_MAX_CONCURRENT_JOBS)")
    _stderr_option(serve)
    _operator_options(serve)
    from .cli_after import add_commands as add_after_run_commands  # predict, export, report, runs

    add_after_run_commands(commands, _stderr_option, _operator_options)
    return parser


def _operator_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", metavar="DIR",
                        help="the only folder csv/npz data may be read from (sets $CEREBROS_DATA_ROOT; "
                             "without a data root no file can be read)")
    parser.add_argument("--artifacts-root", metavar="DIR",
                        help="where run folders DIR/<run_id> are made (sets $CEREBROS_ARTIFACTS_ROOT; "
                             "default ./cerebros_runs)")
    parser.add_argument("--dask-clusters", metavar="NAME=URL,…",
                        help="the Dask schedulers a request may pick by name with opts.executor.cluster "
                             "(sets $CEREBROS_DASK_CLUSTERS; default none)")
    parser.add_argument("--mlflow-servers", metavar="NAME=URL,…",
                        help="the MLflow tracking servers a request may pick by name with "
                             "opts.tracking.mlflow.server (sets $CEREBROS_MLFLOW_SERVERS; default none)")


def _apply_operator_options(args: argparse.Namespace) -> dict | None:
    """Put --data-root/--artifacts-root/--dask-clusters/--mlflow-servers where every part (and
    child process) reads them: the environment. A failed result when one is unusable."""
    for key in ("data_root", "artifacts_root", "dask_clusters", "mlflow_servers"):
        value = getattr(args, key, None)
        if value is None:
            continue
        from .operator_config import configure

        answer = configure(**{key: value})
        if answer["status"] != "configured":
            return _usage_failure(f"--{key.replace('_', '-')}: {answer['error']}", (key,))
    # Lists set in the environment alone are checked here too: a malformed one ends the
    # command at start, not at the first request that names a cluster or a server.
    from .boundary.results import failure_result
    from .operator_config import ConfigError, dask_clusters, mlflow_servers

    try:
        dask_clusters()
        mlflow_servers()
    except ConfigError as exc:
        return failure_result(exc, None)
    return None


def _stderr_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stderr-file", metavar="PATH",
                        help="append stderr (logs, TensorFlow messages) to PATH from the very start")


# --------------------------------------------------------------------------- requests


def _usage_failure(message: str, loc: tuple = ()) -> dict:
    from .boundary.results import failure_result
    from .errors import ErrorDetail, InputError

    return failure_result(InputError(message, [ErrorDetail(loc, message)]), None)


def _parse_request(raw: bytes, where: str, shape: str = '{"spec": …, "opts": …}') -> tuple[dict | None, dict | None]:
    """(request object, None) or (None, failed result) for input that is not a request."""
    import orjson

    try:
        # orjson reads an integer wider than 64 bits as a float (or refuses it); the
        # standard parser keeps every integer exact, so it reads lines that may hold one.
        request = json.loads(raw) if _LONG_DIGITS.search(raw) else orjson.loads(raw)
    except (ValueError, RecursionError) as exc:
        try:
            request = json.loads(raw)  # e.g. 1e400, which orjson refuses
        except (ValueError, RecursionError):
            return None, _usage_failure(f"{where} is not valid JSON: {exc}")
    if not isinstance(request, dict):
        return None, _usage_failure(
            f"{where} must be a JSON object {shape}, got {type(request).__name__}")
    return request, None


def _spec_and_opts(request: dict, allowed: set[str]) -> tuple[Any, Any, dict | None]:
    unknown = sorted(set(request) - allowed)
    if unknown:
        return None, None, _usage_failure(
            f"unknown key(s) in the request: {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
            (unknown[0],))
    if "spec" not in request:
        return None, None, _usage_failure("the request has no \"spec\"", ("spec",))
    return request["spec"], request.get("opts"), None


def _exit_code(result: dict) -> int:
    if result.get("status") in ("success", "valid"):
        return EXIT_OK
    return EXIT_INVALID if result.get("error_type") == "validation_error" else EXIT_FAILED


def _read_request(path: str | None) -> tuple[dict | None, dict | None]:
    try:
        if path is None:
            raw = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as handle:
                raw = handle.read()
    except OSError as exc:
        return None, _usage_failure(f"cannot read the input: {exc}", ("input",))
    return _parse_request(raw, "the input")


def cmd_run(args: argparse.Namespace, out: ProtocolWriter) -> int:
    request, failure = _read_request(args.input)
    spec = opts = None
    if failure is None:
        spec, opts, failure = _spec_and_opts(request, {"spec", "opts"})
    if failure is not None:
        out.write_json({"result": failure} if args.events else failure)
        return EXIT_INVALID

    if not args.json and not args.events and out.stream.isatty():  # a person at a terminal
        from .cli_human import open_terminal_text, run_with_progress

        with open_terminal_text(out.stream.fileno()) as stream:
            return _exit_code(run_with_progress(spec, opts, stream))
    from .api import run_nas

    if args.events:
        opts = _with_event_listener(opts, lambda event: out.write_json({"event": event}))
    result = run_nas(spec, opts)
    out.write_json({"result": result} if args.events else result)
    return _exit_code(result)


def _with_event_listener(opts: Any, listener: Callable[[dict], None]) -> Any:
    """opts with on_event set; malformed opts pass through untouched for validation to report."""
    if opts is None:
        return {"on_event": listener}
    if isinstance(opts, dict):
        return {**opts, "on_event": listener}
    return opts


def cmd_validate(args: argparse.Namespace, out: ProtocolWriter) -> int:
    request, failure = _read_request(args.input)
    if failure is None:
        spec, opts, failure = _spec_and_opts(request, {"spec", "opts"})
    if failure is not None:
        out.write_json(failure)
        return EXIT_INVALID
    from .api import validate

    result = validate(spec, opts)
    out.write_json(result)
    return _exit_code(result)


def cmd_serve(args: argparse.Namespace, out: ProtocolWriter) -> int:
    from .jobs import configure, shutdown

    if args.max_concurrent_jobs is not None:
        answer = configure(max_concurrent_jobs=args.max_concurrent_jobs)
        if answer["status"] != "ok":
            out.write_reply(None, result=answer)
            return EXIT_INVALID
    if args.preload:
        # Pay the engine's start-up (Keras and its backend) before the first request.
        import keras  # noqa: F401

        import cerebros_service.run  # noqa: F401

    try:
        for line in sys.stdin.buffer:
            if not line.strip():
                continue
            request, failure = _parse_request(line, "the request line", SERVE_SHAPE)
            request_id = _request_id(line, request)
            if failure is None:
                failure = _serve_one(request, request_id, out)
            if failure is not None:
                out.write_reply(request_id, result=failure)
    finally:
        # End of input (or a dead reader): jobs still running are cancelled, and their
        # last lines written, before the worker exits.
        shutdown(timeout=SHUTDOWN_GRACE_S)
    return EXIT_OK


SERVE_SHAPE = '{"id": …, "op": "submit"|"cancel"|"status"|"run"|"validate"|"ping"|…, …}'
SERVE_KEYS = {"id", "op", "spec", "opts", "events"}  # of op "run"
SHUTDOWN_GRACE_S = 10.0


def _request_id(line: bytes, request: dict | None) -> Any:
    """The request's id, to answer with exactly as sent (see RawId)."""
    value = request.get("id") if request is not None else None
    if isinstance(value, float):
        raw = json.loads(line, parse_float=str).get("id")
        return RawId(raw) if isinstance(raw, str) else value
    return value


def _serve_one(request: dict, request_id: Any, out: ProtocolWriter) -> dict | None:
    """Answer one serve request; returns a failed result instead for a malformed one.

    Op "run" is the synchronous search of earlier versions (in this process, lines
    wait for it); every other op, "submit" included, is the job protocol shared with
    the Pythonx bridge (jobs/protocol.py) and answers at once.
    """
    from .cli_after import is_serve_op, serve_op

    if is_serve_op(request):  # export, report, runs (cli_after.py)
        out.write_reply(request_id, result=serve_op(request))
        return None
    if request.get("op") != "run":
        from .jobs.protocol import check_request, handle

        _, failure = check_request(request, extra_keys={"id"})
        if failure is not None:
            return failure

        def push(message: dict) -> None:  # a job's events and its end, tagged with the submit's id
            out.write_reply(request_id, **message)

        out.write_reply(request_id, result=handle({k: v for k, v in request.items() if k != "id"}, push))
        return None
    unknown = sorted(set(request) - SERVE_KEYS)
    if unknown:
        return _usage_failure(f"unknown key(s) in the request: {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(SERVE_KEYS))}", (unknown[0],))
    if "events" in request and not isinstance(request["events"], bool):
        return _usage_failure(f"events must be true or false, got {request['events']!r}", ("events",))
    if "spec" not in request:
        return _usage_failure("the request has no \"spec\"", ("spec",))
    from .api import run_nas

    opts = request.get("opts")
    if request.get("events") is True:
        opts = _with_event_listener(opts, lambda event: out.write_reply(request_id, event=event))
    out.write_reply(request_id, result=run_nas(request["spec"], opts))
    return None


# --------------------------------------------------------------------------- main

from .cli_after import COMMANDS as AFTER_RUN_COMMANDS  # noqa: E402 - predict, export, report, runs

COMMANDS = {"run": cmd_run, "validate": cmd_validate, "serve": cmd_serve, **AFTER_RUN_COMMANDS}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out, failure = _take_over_stdout(argv)
    if failure is not None:
        _answer_failure(out, argv, failure)
        return EXIT_INVALID
    parser = build_parser()
    _Parser.help_writer = out
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        parser.print_usage(sys.stderr)
        out.write_json(_usage_failure(str(exc)))
        return EXIT_INVALID
    except SystemExit as exc:  # --help
        return int(exc.code or 0)
    _quiet_logging_setup()
    failure = _apply_operator_options(args)
    if failure is not None:
        _answer_failure(out, argv, failure)
        return EXIT_INVALID
    try:
        return COMMANDS[args.command](args, out)
    except BrokenPipeError:
        return EXIT_FAILED  # the reader went away; nobody is left to answer
    except Exception as exc:  # noqa: BLE001 - every failure answers in the protocol
        import logging

        from .boundary.results import failure_result

        logging.getLogger(__name__).exception("the %s command failed", args.command)
        _answer_failure(out, argv, failure_result(exc, None))
        return EXIT_FAILED


def _answer_failure(out: ProtocolWriter, argv: list[str], failure: dict) -> None:
    """A failed result in the shape the command's reader expects."""
    command = next((arg for arg in argv if arg in COMMANDS), None)
    if command == "serve":
        out.write_reply(None, result=failure)
    elif command == "run" and "--events" in argv:
        out.write_json({"result": failure})
    else:
        out.write_json(failure)


def _quiet_logging_setup() -> None:
    """Log records to stderr (fd 1 is stderr too now), INFO and up from this package."""
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cerebros_service").setLevel(logging.INFO)
