"""Progress events: one ``on_event(dict)`` for the search, fanned out to the caller's listeners.

A caller listens with a Python callable (``opts.on_event``), a Pythonx PID
(``opts.notify``: each event arrives in that Elixir process's mailbox as
``{:cerebros_event, event}``), or both. Every event carries the run's ``run_id``
and goes through ``json_safe`` first: Pythonx cannot decode NaN or numpy values.
"""

from __future__ import annotations

import ctypes
import logging
from typing import Any, Callable

from .jsonsafe import json_safe

log = logging.getLogger(__name__)

EVENT_TAG = "cerebros_event"

Listener = Callable[[dict], None]


def pythonx_sender(pid: Any) -> Listener:
    """A listener that messages an Elixir process through Pythonx.

    The ``pythonx`` module only exists inside a Pythonx interpreter, so it is
    imported on first use; outside Pythonx the listener logs once and stays quiet.
    """
    state: dict = {}

    def send(event: dict) -> None:
        if "module" not in state:
            try:
                import pythonx  # type: ignore[import-not-found]

                state["module"] = pythonx
            except ImportError:
                state["module"] = None
                log.warning("opts.notify was given but this is not a Pythonx interpreter; "
                            "events are not sent")
        if state["module"] is not None:
            _send_tagged(state["module"], pid, EVENT_TAG, event)

    return send


def _send_tagged(pythonx: Any, pid: Any, tag: str, obj: Any) -> None:
    # Pythonx (0.4.x) wraps the object it is handed in a resource that releases
    # one reference when Elixir drops the message, but never takes one: without
    # this, the object could be freed while the message is still in flight.
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(obj))
    pythonx.send_tagged_object(pid, tag, obj)


def send_to_pythonx_pid(pid: Any, tag: str, obj: Any) -> None:
    """Send ``{tag, %Pythonx.Object{obj}}`` to an Elixir pid; raises outside Pythonx.

    From a thread other than an eval's, Pythonx finds the message's context only
    when the thread's first function was defined by a Pythonx eval (the job
    runner's ``thread_entry``); otherwise ``send_tagged_object`` raises StopIteration.
    """
    import pythonx  # type: ignore[import-not-found]

    _send_tagged(pythonx, pid, tag, obj)


def make_event_sink(run_id: str, on_event: Listener | None = None, notify: Any = None) -> Listener | None:
    """One listener for ``run_search``, or None when nobody listens.

    A listener that raises is logged and the others still get the event: a broken
    listener never stops a search (run_search also guards its call).
    """
    listeners: list[Listener] = []
    if on_event is not None:
        listeners.append(on_event)
    if notify is not None:
        listeners.append(pythonx_sender(notify))
    if not listeners:
        return None

    def sink(event: dict) -> None:
        safe = json_safe({**event, "run_id": run_id})
        for listener in listeners:
            try:
                listener(safe)
            except Exception:  # noqa: BLE001 - see docstring
                log.exception("event listener %r failed; the search goes on", listener)

    return sink
