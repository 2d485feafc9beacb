"""CLI commands for finished runs: ``predict``, ``export``, ``report``, ``runs``; and serve ops
for the last three (serve's ``predict`` is the job protocol's, jobs/protocol.py).

Like the rest of the CLI they answer JSON on stdout (exit 0 success, 1 failed,
2 invalid input), except ``runs``, which draws a table when stdout is a terminal
and ``--json`` is not given. Run ids are resolved under the operator's artifacts
root (``--artifacts-root`` or ``CEREBROS_ARTIFACTS_ROOT``, see run_store.py).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

# serve op -> (required keys, optional keys), besides "id" and "op"
SERVE_OPS: dict[str, tuple[set[str], set[str]]] = {
    "export": ({"run"}, {"format"}),
    "report": ({"run"}, set()),
    "runs": (set(), set()),
}


def add_commands(commands, *option_adders: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the commands on the CLI's subparsers; each of ``option_adders`` adds its
    options (--stderr-file, the operator's --artifacts-root/--data-root) to each command."""
    predict = commands.add_parser(
        "predict", help="predict with a run's best model; input {\"x\": …, \"opts\": …} on stdin or --input",
        description="Predict with the best model of RUN (a run id under the artifacts root, or a run folder). "
                    "Input: {\"x\": rows | records | {\"source\": \"csv\"|\"npz\"|…}, \"opts\": {…}} on stdin or in "
                    "--input FILE, or --csv PATH for every row of a CSV under the data root. Output: "
                    "{\"status\", \"predictions\", \"probabilities\", \"classes\"}.")
    predict.add_argument("run", help="run id or run folder")
    source = predict.add_mutually_exclusive_group()
    source.add_argument("--input", metavar="FILE", help="read the request from FILE instead of stdin")
    source.add_argument("--csv", metavar="PATH", help="predict every row of this CSV (under the data root)")
    export = commands.add_parser("export", help="export a run's best model (ONNX), verified against Keras",
                                 description="Write RUN/best_model.onnx, kept only when onnxruntime reproduces "
                                             "Keras's outputs to 1e-4 on sample rows.")
    export.add_argument("run", help="run id or run folder")
    export.add_argument("--format", default="onnx", help="export format (onnx)")
    report = commands.add_parser("report", help="(re)make a run's report.html and plots",
                                 description="Draw RUN/plots/*.png and write the self-contained RUN/report.html.")
    report.add_argument("run", help="run id or run folder")
    runs = commands.add_parser("runs", help="list the runs under the artifacts root, or delete one",
                               description="List the runs under the artifacts root (a table on a terminal, "
                                           "JSON otherwise), or remove one with --delete ID.")
    runs.add_argument("--delete", metavar="ID", help="remove this run's folder")
    runs.add_argument("--json", action="store_true", help="answer JSON even on a terminal")
    for parser in (predict, export, report, runs):
        for add_options in option_adders:
            add_options(parser)


def cmd_predict(args: argparse.Namespace, out) -> int:
    from .cli import EXIT_INVALID, _exit_code, _read_request, _usage_failure
    from .prediction import predict

    if args.csv is not None:
        x, opts = {"source": "csv", "path": args.csv}, None
    else:
        if args.input is None and sys.stdin.isatty():
            print('reading {"x": …, "opts": …} from stdin (end with Ctrl-D), or use --input FILE / --csv PATH',
                  file=sys.stderr)
        request, failure = _read_request(args.input)
        if failure is None:
            unknown = sorted(set(request) - {"x", "opts"})
            if unknown:
                failure = _usage_failure(f"unknown key(s) in the request: {', '.join(unknown)}; allowed: opts, x",
                                         (unknown[0],))
            elif "x" not in request:
                failure = _usage_failure("the request has no \"x\"", ("x",))
        if failure is not None:
            out.write_json(failure)
            return EXIT_INVALID
        x, opts = request["x"], request.get("opts")
    result = predict(args.run, x, opts)
    out.write_json(result)
    return _exit_code(result)


def cmd_export(args: argparse.Namespace, out) -> int:
    from .cli import _exit_code
    from .onnx_export import export

    result = export(args.run, args.format)
    out.write_json(result)
    return _exit_code(result)


def cmd_report(args: argparse.Namespace, out) -> int:
    from .cli import _exit_code
    from .reporting import report

    result = report(args.run)
    out.write_json(result)
    return _exit_code(result)


def cmd_runs(args: argparse.Namespace, out) -> int:
    from .cli import _exit_code
    from .run_store import delete_run, list_runs

    result = delete_run(args.delete) if args.delete is not None else list_runs()
    code = 0 if result.get("status") == "deleted" else _exit_code(result)
    if not args.json and out.stream.isatty():  # a person at a terminal
        from .cli_human import open_terminal_text, print_failure, print_runs, terminal_console

        with open_terminal_text(out.stream.fileno()) as stream:
            console = terminal_console(stream)
            if result.get("status") == "success":
                print_runs(console, result)
            elif result.get("status") == "deleted":
                console.print(f"deleted run {result['run_id']} ({result['path']})")
            else:
                print_failure(console, result)
        return code
    out.write_json(result)
    return code


COMMANDS = {"predict": cmd_predict, "export": cmd_export, "report": cmd_report, "runs": cmd_runs}


def serve_op(request: dict) -> dict:
    """The answer to one serve request whose op is in SERVE_OPS (a failed result for a malformed one)."""
    from .boundary.results import failure_result
    from .errors import ErrorDetail, InputError

    op = request["op"]
    required, optional = SERVE_OPS[op]
    unknown = sorted(set(request) - required - optional - {"id", "op"}, key=str)
    missing = sorted(required - set(request))
    if unknown or missing:
        key = (unknown or missing)[0]
        message = (f"unknown key(s) for op {op!r}: {', '.join(map(str, unknown))}; allowed: "
                   f"{', '.join(sorted(required | optional))}" if unknown else
                   f"op {op!r} needs {', '.join(map(repr, missing))}")
        return failure_result(InputError(message, [ErrorDetail((key,), message)]), None)
    if op == "export":
        from .onnx_export import export

        return export(request["run"], request.get("format", "onnx"))
    if op == "report":
        from .reporting import report

        return report(request["run"])
    from .run_store import list_runs

    return list_runs()


def is_serve_op(request: Any) -> bool:
    return isinstance(request, dict) and request.get("op") in SERVE_OPS
