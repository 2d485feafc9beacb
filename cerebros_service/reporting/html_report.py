"""report.html: one self-contained page per run (inline CSS, images as data: URIs).

It opens from a file, a mail attachment or an MLflow artifact view alike: nothing is
fetched from the network and no script runs.
"""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path

from .run_data import RunData

TOP_TRIALS = 10

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #1f2933;
       max-width: 1120px; margin: 2rem auto; padding: 0 1rem; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #d9dee3; padding-bottom: 0.2rem; }
.sub { color: #6b7280; margin-top: 0; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.6rem 0; }
th, td { padding: 0.3rem 0.7rem; border-bottom: 1px solid #e5e7eb; text-align: left; vertical-align: top; }
th { background: #f3f4f6; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.facts th { background: none; color: #6b7280; font-weight: normal; }
tr.best td { background: #fff4ec; }
img { max-width: 100%; border: 1px solid #e5e7eb; margin: 0.5rem 0; }
.note { color: #6b7280; font-size: 0.9rem; } .bad { color: #b91c1c; }
details summary { cursor: pointer; margin: 0.6rem 0; }
"""


def render_report(data: RunData, plots: dict[str, Path], notes: list[str]) -> str:
    """The page as text; ``plots`` maps a plot's name to its PNG (missing ones are left out)."""
    run = data.run
    parts = [f"<h1>Search report — {_e(data.run_id)}</h1>",
             f"<p class='sub'>made {_e(datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'))} "
             "by cerebros-service</p>",
             "<h2>Summary</h2>", _facts(data)]
    parts += [f"<p class='note'>{_e(note)}</p>" for note in notes]
    parts += ["<h2>Delivered model</h2>", _delivered_text(data), _bought_table(data),
              _image(plots.get("ensemble"), "ensemble member weights"), _members_table(data)]
    parts += ["<h2>Best architecture</h2>", _image(plots.get("architecture"), "the best architecture"),
              _best_text(data)]
    parts += ["<h2>Trials</h2>", _image(plots.get("trials_by_index"), "metric per trial"),
              _image(plots.get("trials_by_time"), "metric over time"),
              "<h2>Generations</h2>", _image(plots.get("generations"), "per-generation statistics"),
              _generations_table(data),
              "<h2>Learning curves of the best trials</h2>", _image(plots.get("learning_curves"), "learning curves"),
              f"<h2>Top {min(TOP_TRIALS, len(data.completed))} trials</h2>",
              _trials_table(data.ranked()[:TOP_TRIALS], data, ranked=True),
              f"<details><summary>All {len(data.trials)} trials</summary>",
              _trials_table(data.trials, data, ranked=False), "</details>"]
    failed = [t for t in data.trials if t.get("status") == "failed"]
    if failed:
        rows = "".join(f"<tr><td class='num'>{t.get('trial')}</td><td class='bad'>{_e(t.get('error'))}</td></tr>"
                       for t in failed)
        parts += [f"<h2>Failed trials ({len(failed)})</h2>",
                  f"<table><tr><th>trial</th><th>error</th></tr>{rows}</table>"]
    if run.get("status") is None:
        parts.insert(3, "<p class='bad'>run.json is missing: the run may still be going or was stopped.</p>")
    body = "\n".join(part for part in parts if part)
    return (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
            f"<title>Search report — {_e(data.run_id)}</title><style>{STYLE}</style></head>"
            f"<body>\n{body}\n</body></html>\n")


def _e(value) -> str:
    return html.escape("" if value is None else str(value))


def _number(value, digits: int = 4) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:#.{digits}g}"


def _when(iso: str | None) -> str | None:
    """An ISO timestamp as ``2026-12-01 18:04:32 UTC`` (as recorded when it does not parse)."""
    try:
        moment = datetime.fromisoformat(str(iso))
    except ValueError:
        return iso
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _seconds(value) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value:,.1f} s"


def _facts(data: RunData) -> str:
    run, info = data.run, data.run.get("run_info") or {}
    dataset = run.get("dataset") or {}
    timings = run.get("timings") or {}
    onnx = (run.get("after_run") or {}).get("onnx") or {}
    test = run.get("test_metric")
    if isinstance(test, dict):
        test = test.get("value")
    rows = [
        ("dataset", f"{info.get('dataset_id') or dataset.get('name') or '—'} "
                    f"({dataset.get('n_samples', '?')} samples × {dataset.get('n_features', '?')} features)"),
        ("task", dataset.get("task")),
        ("strategy", (run.get("settings") or {}).get("strategy")),
        ("ranking metric", f"{data.metric} ({'higher' if data.direction == 'max' else 'lower'} is better)"),
        ("best value", _number(run.get("best_value", (data.best or {}).get("value")))),
        ("delivered model", _delivered_fact(data)),
        # run.json's test_metric is the delivered model's (the ensemble's when there is one)
        ("test metric", _number(test) if test is not None else None),
        ("trials", f"{len(data.completed)} completed, {len(data.trials) - len(data.completed)} failed"),
        ("stopped because", run.get("stopped_because")),
        ("started", _when(timings.get("started_at"))),
        ("duration", _seconds(timings.get("duration_s"))),
        ("device", run.get("device")),
        ("seed", run.get("seed")),
        ("ONNX model", _onnx_text(onnx)),
    ]
    body = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows if v not in (None, ""))
    return f"<table class='facts'>{body}</table>"


def _onnx_text(onnx: dict) -> str | None:
    if not onnx:
        return None
    if onnx.get("status") == "done":
        return (f"best_model.onnx (input {onnx.get('input')!r}, output {onnx.get('output')!r}; matches Keras "
                f"to {_number(onnx.get('max_abs_diff'), 2)} on {onnx.get('verified_rows')} rows)")
    return f"{onnx.get('status')}: {onnx.get('reason')}"


def _delivered_fact(data: RunData) -> str:
    members = (data.ensemble or {}).get("members") or []
    if data.delivered_model == "ensemble":
        return f"ensemble of {len(members)} trial{'' if len(members) == 1 else 's'} ({(data.ensemble or {}).get('method')})"
    best = (data.best or {}).get("trial", data.run.get("best_trial"))
    return f"single best (trial {best})" if best is not None else "single best"


def _delivered_text(data: RunData) -> str:
    ensemble = data.ensemble or {}
    if data.delivered_model == "ensemble":
        members = ensemble.get("members") or []
        single = (ensemble.get("single_best") or {}).get("trial")
        method = ("equal weights on the best trials by validation" if ensemble.get("method") == "average"
                  else "greedy selection with replacement on the validation loss")
        return (f"<p><code>best_model.keras</code> is an ensemble of {len(members)} trials: a weighted average "
                f"of their outputs ({_e(method)}), picked from the {_e(ensemble.get('pool'))} best trials "
                f"(size asked: {_e(ensemble.get('size'))}). The single best, trial {_e(single)}, is "
                "<code>best_single_model.keras</code>.</p>")
    best = (data.best or {}).get("trial", data.run.get("best_trial"))
    text = f"<p><code>best_model.keras</code> is the single best trial ({_e('trial ' + str(best))}).</p>"
    # why no ensemble was delivered when one was asked for (a cancelled search, an error)
    why = ensemble.get("skipped") or ensemble.get("error")
    if why:
        text += f"<p class='note'>No ensemble: {_e(why)}.</p>"
    return text


def _optimism(validation, test, direction: str):
    """How much better the validation value looked than the test value (positive: overstated)."""
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (validation, test)):
        return None
    return validation - test if direction == "max" else test - validation


def _bought_table(data: RunData) -> str:
    """What the ensemble bought: its validation and test value against the single best's."""
    ensemble = data.ensemble or {}
    if data.delivered_model != "ensemble":
        return ""
    single = ensemble.get("single_best") or {}
    single_test = single.get("test_metric", (data.run.get("evaluation") or {}).get("test_metric"))
    name = data.metric.removeprefix("val_")
    sign = "validation − test" if data.direction == "max" else "test − validation"
    rows = [("ensemble (delivered)", ensemble.get("validation_metric"), ensemble.get("test_metric")),
            (f"single best (trial {single.get('trial')})", single.get("validation_metric"), single_test)]
    body = "".join(
        f"<tr><td>{_e(label)}</td><td class='num'>{_number(val)}</td><td class='num'>{_number(test)}</td>"
        f"<td class='num'>{_number(_optimism(val, test, data.direction))}</td></tr>" for label, val, test in rows)
    if ensemble.get("test_metric") is None:
        note = ("No test rows were held out (spec.evaluation.test_split, test_dataset), so there is no test "
                "value and no optimism to show.")
    else:
        note = ("Optimism: how much better a model looked on the validation rows that chose it than on the "
                "test rows nothing was chosen by.")
    return (f"<table><tr><th>model</th><th>validation {_e(name)}</th><th>test {_e(name)}</th>"
            f"<th>optimism ({_e(sign)})</th></tr>{body}</table><p class='note'>{_e(note)}</p>")


def _members_table(data: RunData) -> str:
    members = data.ensemble_members()
    if not members:
        return ""
    single = ((data.ensemble or {}).get("single_best") or {}).get("trial")
    rows = []
    for member in members:
        record = member["record"] or {}
        hidden = ((record.get("architecture") or {}).get("levels") or [])[:-1]
        neurons = " · ".join(",".join(str(u.get("neurons")) for u in level.get("units", [])) for level in hidden)
        css = " class='best'" if member["trial"] == single else ""
        rows.append(f"<tr{css}><td class='num'>{_e(member['trial'])}</td><td class='num'>{_number(member['weight'])}</td>"
                    f"<td class='num'>{_number(record.get('value'))}</td>"
                    f"<td class='num'>{len(hidden) if record else '—'}</td><td>{_e(neurons or '—')}</td>"
                    f"<td class='num'>{_number(record.get('params'))}</td></tr>")
    return (f"<table class='members'><tr><th>trial</th><th>weight</th><th>{_e(data.metric)}</th>"
            f"<th>hidden levels</th><th>neurons per level</th><th>parameters</th></tr>{''.join(rows)}</table>")


def _best_text(data: RunData) -> str:
    if not data.best:
        return "<p class='note'>No best architecture was recorded.</p>"
    levels = data.best.get("architecture", {}).get("levels", [])
    hidden = [[unit.get("neurons") for unit in level.get("units", [])] for level in levels[:-1]]
    shape = " → ".join("[" + ", ".join(map(str, units)) + "]" for units in hidden)
    return (f"<p>Trial {_e(data.best.get('trial'))} (generation {_e(data.best.get('generation'))}): "
            f"hidden levels {_e(shape)}, {_e(_number(data.best.get('params')))} parameters.</p>")


def _generations_table(data: RunData) -> str:
    if not data.generations:
        return ""
    rows = "".join(
        f"<tr><td class='num'>{g.get('generation')}</td><td class='num'>{_number(g.get('best_fitness'))}</td>"
        f"<td class='num'>{_number(g.get('mean_fitness'))}</td><td class='num'>{_number(g.get('std_fitness'))}</td>"
        f"<td class='num'>{_e(g.get('population_size'))}</td></tr>" for g in data.generations)
    return ("<table><tr><th>generation</th><th>best</th><th>mean</th><th>std</th><th>trials</th></tr>"
            f"{rows}</table>")


def _trials_table(trials: list[dict], data: RunData, ranked: bool) -> str:
    if not trials:
        return "<p class='note'>No trials.</p>"
    best_trial = (data.best or {}).get("trial")
    head = ("<tr>" + ("<th>rank</th>" if ranked else "") + "<th>trial</th><th>generation</th><th>status</th>"
            f"<th>{_e(data.metric)}</th><th>best epoch / run</th><th>parameters</th><th>time</th>"
            "<th>neurons per level</th></tr>")
    rows = []
    for rank, trial in enumerate(trials, start=1):
        levels = (trial.get("architecture") or {}).get("levels", [])
        neurons = " · ".join(",".join(str(u.get("neurons")) for u in level.get("units", [])) for level in levels[:-1])
        css = " class='best'" if trial.get("trial") == best_trial else ""
        rows.append(
            f"<tr{css}>" + (f"<td class='num'>{rank}</td>" if ranked else "")
            + f"<td class='num'>{_e(trial.get('trial'))}</td><td class='num'>{_e(trial.get('generation'))}</td>"
            f"<td>{_e(trial.get('status'))}</td><td class='num'>{_number(trial.get('value'))}</td>"
            f"<td class='num'>{_e(trial.get('best_epoch') or '—')} / {_e(trial.get('epochs_run'))}</td>"
            f"<td class='num'>{_number(trial.get('params'))}</td><td class='num'>{_seconds(trial.get('duration_s'))}</td>"
            f"<td>{_e(neurons)}</td></tr>")
    return f"<table>{head}{''.join(rows)}</table>"


def _image(path: Path | None, alt: str) -> str:
    if path is None or not path.is_file():
        return ""
    encoded = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"<img alt='{_e(alt)}' src='data:image/png;base64,{encoded}'>"
