"""Where a ``gradio_client`` call's time goes: the client library, Gradio's queue protocol, or our handler.

``python -m bench.gradio_path [--smoke] [--repeats N] [--model-repo REPO] [--json OUT]``

One ``python -m app`` on loopback (the model repository, the demo catalogue), one client, a cached text query. Median
latency of a block of calls each, interleaved round by round:

- ``gradio_client`` (``Client(download_files=False)``) on ``/match_text`` and on ``/health`` (a trivial endpoint of
  the same app): their difference is what our handler costs on that path (the pipeline, the gallery, the JSON);
- the same two through Gradio's own HTTP protocol by hand (``POST /gradio_api/call/NAME``, then the event stream
  ``GET /gradio_api/call/NAME/EVENT_ID``) with httpx: the client library's share is ``gradio_client`` minus this;
- ``GET /api/v1/health`` and a cached ``POST /api/v1/search``: the server's floor, and our search without Gradio.

What is left after these is the queue: joining, the worker hop, the event stream. ``gradio_client``'s figures move
in steps of 50 ms: its event-stream reader sleeps 50 ms whenever no message is waiting (``gradio_client.utils``), so
what a call costs below that does not show through it; the by-hand rows show it.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

import httpx

from bench import _common as c
from bench.api import DEMO, start_app

QUERY = "Red cotton crew-neck T-shirt by Northwind"
BLOCK = 5


SESSION = "gradio-path-bench"  # one session for every call, as one gradio_client.Client has: a new session costs more


def _by_hand(http: httpx.Client, name: str, data: list) -> dict:
    """One call through Gradio's HTTP protocol: post the inputs, read the event stream to its end."""
    body = {"data": data, "session_hash": SESSION}
    event = http.post(f"gradio_api/call/{name}", json=body).json()["event_id"]
    answer = None
    with http.stream("GET", f"gradio_api/call/{name}/{event}") as stream:
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "complete":
                answer = json.loads(line.split(":", 1)[1])
            elif kind == "error":
                raise RuntimeError(f"{name}: {line}")
    if answer is None:
        raise RuntimeError(f"{name}: no answer")
    return answer


def _inputs(http: httpx.Client, name: str, given: list) -> list:
    """``given`` then each later parameter's default, as ``gradio_client`` fills them in (the raw protocol does not)."""
    params = http.get("gradio_api/info").json()["named_endpoints"][f"/{name}"]["parameters"]
    return given + [p.get("parameter_default") for p in params[len(given) :]]


def main(argv: list[str] | None = None) -> int:
    p = c.parser(__doc__)
    args = p.parse_args(argv)
    rounds = c.repeats(args, 7)
    repo = c.model_repo(args)
    info = c.machine()
    from gradio_client import Client

    with tempfile.TemporaryDirectory(prefix="gradio-path-") as tmp:
        app = start_app(repo, DEMO, Path(tmp))
        try:
            client = Client(app.url, verbose=False, download_files=False)
            http = httpx.Client(base_url=app.url, timeout=30)
            client.predict(QUERY, api_name="/match_text")  # cached from here on
            text_inputs, health_inputs = _inputs(http, "match_text", [QUERY]), _inputs(http, "health", [])
            steps = {
                "gradio_client /match_text": lambda: client.predict(QUERY, api_name="/match_text"),
                "gradio_client /health": lambda: client.predict(api_name="/health"),
                "by hand /match_text": lambda: _by_hand(http, "match_text", text_inputs),
                "by hand /health": lambda: _by_hand(http, "health", health_inputs),
                "REST GET /api/v1/health": lambda: http.get("api/v1/health").raise_for_status(),
                "REST POST /api/v1/search": lambda: http.post("api/v1/search", json={"text": QUERY}).raise_for_status(),
            }
            for step in steps.values():
                step()
            timed = {name: (lambda r, s=step: statistics.median(c.timed(s) for _ in range(BLOCK)))
                     for name, step in steps.items()}  # fmt: skip
            samples = c.interleave(timed, rounds)
        finally:
            app.stop()
    ms = {name: samples.median_ms(name) for name in steps}
    rows = [[name, f"{value:.1f}"] for name, value in ms.items()]
    parts = [
        ["our answer on Gradio's path (by hand: match_text - health): handler, gallery and JSON postprocessing",
         f"{ms['by hand /match_text'] - ms['by hand /health']:.1f}"],
        ["the same answer without Gradio (REST: search - health): the pipeline and our JSON",
         f"{ms['REST POST /api/v1/search'] - ms['REST GET /api/v1/health']:.1f}"],
        ["gradio_client, the library (gradio_client - by hand, /health)",
         f"{ms['gradio_client /health'] - ms['by hand /health']:.1f}"],
        ["Gradio's queue protocol (by hand /health - REST health)",
         f"{ms['by hand /health'] - ms['REST GET /api/v1/health']:.1f}"],
    ]  # fmt: skip
    payload = c.report(
        "gradio_path",
        info,
        f"One cached text query, 1 client: median ms of blocks of {BLOCK} calls, {rounds} interleaved rounds",
        ["path", "ms"],
        rows + parts,
    )
    c.write_json(args.json, payload)
    return 0


if __name__ == "__main__":
    sys.exit(main())
