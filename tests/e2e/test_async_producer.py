"""Asynchronous mode end to end (issue 6): the committed envoy.yaml with `producer_async: true`,
through real Envoy 1.40 and through `host-sim serve` (Envoy profile) on the same file, each in
front of the REST proxy bridged to the tansu broker (the session's stack: its recording relay and
REST proxy).

A burst of requests with bounded concurrency; every request answered 200 must have its message in
Kafka exactly once, a request refused with 503 (buffer full, REST proxy unhealthy) must have
none, and any other answer fails the test. The filter's own counters must agree: messages_sent
equals the 200s, messages_rejected the 503s, nothing dropped. The 503s are allowed but counted
and reported (pytest's "reported figures" section).
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import (WASM, EnvoyPorts, render_envoy_yaml, start_envoy, start_host_sim_serve,
                      with_filter_config)
from procs import free_port
from scenarios import HOST, SENT

TOPIC = "async-burst"  # the filter's topic here: the burst's own (conftest.TOPICS)
BURST = 500          # requests
CONCURRENCY = 16     # at most this many in flight
REQUEST_TIMEOUT = 20.0
# The filter answers before it sends; a record waits at most producer_async_flush_timeout (1 s by
# default) for its batch, then the REST proxy and the broker take their time. Bounded wait:
DELIVERY_TIMEOUT = 30.0
UNAVAILABLE = re.compile(rb'^\{"message":"Service Unavailable","error":"[^"]+"\}$')
METRICS = ("messages_sent", "messages_rejected", "messages_dropped", "messages_failed")


class AsyncGateway:
    def __init__(self, name, proc, port, admin, stack):
        self.name = name
        self.proc = proc
        self.port = port
        self.admin = admin
        self.stack = stack  # the session stack whose relay and REST proxy this gateway calls

    def metrics(self) -> dict[str, int]:
        """The filter's counters, by short name (Envoy: wasmcustom.*, host-sim: its /stats)."""
        if self.name == "envoy":
            text = requests.get(f"http://127.0.0.1:{self.admin}/stats",
                                params={"filter": r"^wasmcustom\.kafka_upstream\."},
                                timeout=5).text
            values = {}
            for line in text.splitlines():
                name, _, value = line.partition(": ")
                if value.strip().isdigit():
                    values[name.rsplit(".", 1)[-1]] = int(value)
        else:
            stats = requests.get(f"http://127.0.0.1:{self.admin}/stats", timeout=5).json()
            values = {name.rsplit(".", 1)[-1]: int(m["value"]) for name, m in stats.items()}
        return {k: values[k] for k in METRICS if k in values}


@pytest.fixture(scope="module", params=["envoy", "host-sim"])
def async_gateway(request, kafka, run_dir):
    """A gateway of its own (fresh counters), the stack's REST proxy behind it."""
    name = request.param
    stack = request.getfixturevalue("envoy_stack" if name == "envoy" else "hostsim_stack")
    ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=stack.relay.port)
    config = run_dir / f"{name}-async.yaml"
    config.write_text(with_filter_config(render_envoy_yaml(ports, WASM), producer_async=True,
                                         topic=TOPIC))
    if name == "envoy":
        proc = start_envoy("envoy-async", config, ports, run_dir)
    else:
        proc = start_host_sim_serve("host-sim-async", config, ports.listener, stack.relay.port,
                                    ports.admin, run_dir)
    try:
        yield AsyncGateway(name, proc, ports.listener, ports.admin, stack)
    finally:
        proc.stop()
        stack.relay.wait_idle(15.0)


def _burst(port: int, token: str) -> list[tuple[int, int | None, bytes]]:
    """BURST POSTs, CONCURRENCY at a time, each on its thread's keep-alive connection; each
    answer as (seq, status, body), status None when the request got no answer."""
    local = threading.local()

    def one(seq: int):
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = http.client.HTTPConnection("127.0.0.1", port,
                                                           timeout=REQUEST_TIMEOUT)
        body = json.dumps({"burst": token, "seq": seq}).encode()
        try:
            conn.request("POST", f"/kafka/burst?seq={seq}", body=body,
                         headers={"Host": HOST, "Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            local.conn = None
            return seq, None, repr(e).encode()
        if resp.will_close:
            conn.close()
            local.conn = None
        return seq, resp.status, data

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        return list(pool.map(one, range(BURST)))


def _burst_records(records, token: str) -> list[tuple[int, int, int]]:
    """(seq, partition, offset) of every record of this burst among `records` (the topic may
    also hold an earlier burst's records: the marks can lag, see Kafka.read_until)."""
    found = []
    for _topic, partition, offset, _key, value in records:
        message = json.loads(value)
        args = message.get("body_args")
        if isinstance(args, dict) and args.get("burst") == token:
            found.append((args["seq"], partition, offset))
    return found


def _records(req) -> int | None:
    """How many records a recorded REST request carried (None: not a v2 produce body)."""
    try:
        return len(json.loads(req.body)["records"])
    except (ValueError, KeyError, TypeError):
        return None


def test_async_burst_every_acknowledged_message_is_in_kafka(async_gateway, kafka,
                                                            record_property):
    gw = async_gateway
    gw.stack.rest_proxy.clear_faults()
    token = uuid.uuid4().hex
    marks = kafka.watermarks()
    mark = gw.stack.relay.mark()

    started = time.monotonic()
    answers = _burst(gw.port, token)
    burst_s = time.monotonic() - started
    gw.stack.check_gateway_alive()
    assert gw.proc.alive(), f"{gw.name}: the async gateway exited during the burst"

    acked = {seq for seq, status, body in answers if status == 200}
    refused = {seq for seq, status, body in answers if status == 503}
    other = [(seq, status, body[:200]) for seq, status, body in answers
             if not ((status == 200 and body == SENT)
                     or (status == 503 and UNAVAILABLE.match(body)))]
    assert not other, (f"{gw.name}: {len(other)} answer(s) neither 200 {SENT!r} nor the "
                       f"filter's 503 (first ones: {other[:5]})")
    assert acked, f"{gw.name}: every request of the burst was refused with 503"

    # Every acknowledged message reaches the broker (bounded wait for the last batches, then
    # one quiet second in which nothing more may arrive).
    def all_there(records) -> bool:
        return acked <= {seq for seq, _p, _o in _burst_records(records, token)}

    records = kafka.read_until(marks, TOPIC, all_there, DELIVERY_TIMEOUT)
    delivered_s = time.monotonic() - started
    found = _burst_records(records, token)
    missing = acked - {seq for seq, _p, _o in found}
    assert not missing, (f"{gw.name}: {len(missing)} of {len(acked)} acknowledged message(s) not "
                         f"in Kafka after {DELIVERY_TIMEOUT:.0f} s (seq {sorted(missing)[:20]}); "
                         f"the filter's counters {gw.metrics()}; REST requests (method, path, "
                         f"records): "
                         f"{[(r.method, r.path, _records(r)) for r in gw.stack.relay.since(mark)]}")
    # ... exactly once, and nothing of a refused request.
    gw.stack.relay.wait_idle(15.0)
    counts = Counter(seq for seq, _p, _o in found)
    duplicated = sorted(seq for seq, n in counts.items() if n > 1)
    assert not duplicated, f"{gw.name}: message(s) written more than once: seq {duplicated[:20]}"
    unexpected = sorted(set(counts) - acked)
    assert not unexpected, (f"{gw.name}: message(s) of requests not answered 200 are in Kafka: "
                            f"seq {unexpected[:20]}")

    # The filter batched: fewer REST requests than messages, and they carried every message once.
    batches = [_records(req) or 0 for req in gw.stack.relay.since(mark)
               if req.method == "POST" and req.path.endswith(f"/topics/{TOPIC}")]
    assert sum(batches) == len(acked), (f"{gw.name}: the REST requests carried {sum(batches)} "
                                        f"record(s) for {len(acked)} acknowledged message(s)")
    assert len(batches) < len(acked), f"{gw.name}: no batching ({len(batches)} REST requests)"

    # The filter's counters agree (the acknowledgements reach the filter shortly after Kafka).
    want = {"messages_sent": len(acked), "messages_rejected": len(refused),
            "messages_dropped": 0, "messages_failed": 0}
    deadline = time.monotonic() + 10.0
    while (got := gw.metrics()) != want and time.monotonic() < deadline:
        time.sleep(0.2)
    assert got == want, f"{gw.name}: the filter's counters {got}, expected {want}"

    record_property("report", (
        f"{BURST} requests ({CONCURRENCY} concurrent) in {burst_s:.2f} s: {len(acked)} answered "
        f"200, {len(refused)} answered 503; all {len(acked)} in Kafka once each (read back "
        f"{delivered_s:.1f} s after the start, 1 s of quiet included), in {len(batches)} REST "
        f"request(s) (largest {max(batches)} records)"))
