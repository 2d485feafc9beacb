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
import os
import sys
import threading
from typing import Any, BinaryIO, Callable

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


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

    def write_text(self, text: str) -> None:
        with self.lock:
            self.stream.write(text.encode())


def _take_over_stdout(argv: list[str]) -> ProtocolWriter:
    """Keep the real stdout for the protocol; send fd 1 (and --stderr-file's) to stderr."""
    protocol_fd = os.dup(1)
    stderr_file = _stderr_file_arg(argv)
    if stderr_file:
        fd = os.open(stderr_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    os.dup2(2, 1)
    sys.stdout.flush()
    return ProtocolWriter(protocol_fd)


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
    commands = parser.add_subparsers(dest="command", metavar="{run,validate,serve}")
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
    _stderr_option(run)

    check = commands.add_parser(
        "validate", help="check a request without running it (never imports TensorFlow)",
        description="Validate a request {\"spec\": …, \"opts\": …} (stdin or --input FILE) and answer "
                    "{\"status\": \"valid\", \"spec\": …, \"opts\": …} with defaults filled in (exit 0) "
                    "or a failed result with error_type validation_error (exit 2).",
    )
    check.add_argument("--input", metavar="FILE", help="read the request from FILE instead of stdin")
    _stderr_option(check)

    serve = commands.add_parser(
        "serve", help="long-lived worker: one JSON request per line in, JSON lines out",
        description="Read one request per line: {\"id\": any, \"op\": \"run\"|\"validate\"|\"ping\", "
                    "\"spec\": …, \"opts\": …, \"events\": bool}. Answer zero or more "
                    "{\"id\", \"event\"} lines then one {\"id\", \"result\"} line per request. "
                    "TensorFlow stays loaded between runs. EOF on stdin ends the worker (exit 0).",
    )
    serve.add_argument("--preload", action="store_true",
                       help="import the search engine (and TensorFlow) before reading requests")
    _stderr_option(serve)
    return parser


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
        request = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
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
    if args.preload:
        # Pay the engine's start-up (Keras and its backend) before the first request.
        import keras  # noqa: F401

        import cerebros_service.run  # noqa: F401

    for line in sys.stdin.buffer:
        if not line.strip():
            continue
        request, failure = _parse_request(
            line, "the request line", '{"id": …, "op": "run"|"validate"|"ping", "spec": …, "opts": …}')
        request_id = request.get("id") if request is not None else None
        if failure is None:
            failure = _serve_one(request, request_id, out)
        if failure is not None:
            out.write_json({"id": request_id, "result": failure})
    return EXIT_OK


SERVE_KEYS = {"id", "op", "spec", "opts", "events"}


def _serve_one(request: dict, request_id: Any, out: ProtocolWriter) -> dict | None:
    """Answer one serve request; returns a failed result instead for a malformed one."""
    op = request.get("op")
    unknown = sorted(set(request) - SERVE_KEYS)
    if unknown:
        return _usage_failure(f"unknown key(s) in the request: {', '.join(unknown)}; "
                              f"allowed: {', '.join(sorted(SERVE_KEYS))}", (unknown[0],))
    if "events" in request and not isinstance(request["events"], bool):
        return _usage_failure(f"events must be true or false, got {request['events']!r}", ("events",))
    if op == "ping":
        result = {"status": "ok", "pid": os.getpid(), "tensorflow_loaded": "tensorflow" in sys.modules}
    elif op in ("run", "validate"):
        if "spec" not in request:
            return _usage_failure("the request has no \"spec\"", ("spec",))
        from .api import run_nas, validate

        opts = request.get("opts")
        if op == "run":
            if request.get("events") is True:
                opts = _with_event_listener(
                    opts, lambda event: out.write_json({"id": request_id, "event": event}))
            result = run_nas(request["spec"], opts)
        else:
            result = validate(request["spec"], opts)
    else:
        return _usage_failure(f"op must be one of \"run\", \"validate\", \"ping\", got {op!r}", ("op",))
    out.write_json({"id": request_id, "result": result})
    return None


# --------------------------------------------------------------------------- main

COMMANDS = {"run": cmd_run, "validate": cmd_validate, "serve": cmd_serve}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out = _take_over_stdout(argv)
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
    try:
        return COMMANDS[args.command](args, out)
    except BrokenPipeError:
        return EXIT_FAILED  # the reader went away; nobody is left to answer


def _quiet_logging_setup() -> None:
    """Log records to stderr (fd 1 is stderr too now), INFO and up from this package."""
    import logging

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("cerebros_service").setLevel(logging.INFO)
