"""Framework ceiling for the stream benchmark: a bare Faust agent reading a topic with take_events.

Run as a child process by streamrank.bench.stream: it consumes N records with no processing and
writes {"records": N, "seconds": s} to $RESULT_PATH (Faust takes over stdout). It shows what Faust's
per-event stream path costs on this machine.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time


def main() -> None:
    """Consumes argv[2] records of topic argv[1] from bootstrap $BOOTSTRAP, then exits."""
    import faust

    topic_name, expected = sys.argv[1], int(sys.argv[2])
    for name in ("aiokafka", "faust", "mode", "kafka"):
        logging.getLogger(name).setLevel(logging.WARNING)
    app = faust.App(
        f"faust-baseline-{os.getpid()}", broker=f"kafka://{os.environ['BOOTSTRAP']}", store="memory://",
        datadir=tempfile.mkdtemp(), key_serializer="raw", value_serializer="raw", web_enabled=False,
        broker_session_timeout=10, broker_heartbeat_interval=2, consumer_auto_offset_reset="earliest",
    )
    topic = app.topic(topic_name, key_type=bytes, value_type=bytes)
    state = {"n": 0, "t0": 0.0}

    @app.agent(topic)
    async def drain(stream):  # type: ignore[no-untyped-def]
        async for events in stream.take_events(20_000, within=0.5):
            if not state["t0"]:
                state["t0"] = time.time()
            state["n"] += len(events)
            if state["n"] >= expected:
                result = {"records": state["n"], "seconds": time.time() - state["t0"]}
                with open(os.environ["RESULT_PATH"], "w") as fh:
                    json.dump(result, fh)
                os._exit(0)

    worker = faust.Worker(app, loglevel="error", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
