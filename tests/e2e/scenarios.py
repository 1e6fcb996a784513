"""The requests the suite sends, what each must produce, and how one is run against a gateway.

The filter configuration these expectations assume is the one in the top-level envoy.yaml
(test_deploy_files.py checks that it still is): every forward_* flag on, default topic
`kafka-upstream`, `topics_query_arg` "topics" with allowed_topics orders and audit,
`key_query_arg` "key", max_body_size 65536, REST proxy timeout 5000 ms.

The expected Kafka message is what Kong's kafka-upstream handler builds from the same request
(issue 3; Kong's handler.lua): {method, headers, uri, uri_args, body, body_args, body_base64}, with
the request headers as the gateway hands them to the filter. Envoy changes the headers before any
filter runs, and those changes are part of the expectation for an Envoy deployment (ENVOY_*).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import time
from dataclasses import dataclass, field
from typing import Callable

SENT = b'{"message":"message sent"}'
BAD_GATEWAY = b'{"message":"Bad Gateway","error":"could not send message to topic"}'
NOT_ALLOWED = (b'{"message":"Bad Request","error":'
               b'"one or more target topics are not in the allowed topics list"}')
TOO_LARGE = b'{"message":"Payload Too Large","error":"request body is larger than max_body_size"}'
TIMED_OUT = b'{"message":"Gateway Timeout","error":"timed out sending message to topic"}'
# envoy.yaml's direct_response: the answer a client gets if the filter is ever bypassed.
TRIPWIRE_STATUS = 500
TRIPWIRE = b'{"message":"kafka_upstream filter bypassed: the route answered"}'

TOPIC = "kafka-upstream"
MAX_BODY = 65536
REST_TIMEOUT_S = 5.0
HOST = "gateway.e2e"  # the Host of every request, the same for both gateways

# Envoy's HTTP connection manager edits the request headers before the filter chain: it removes
# hop-by-hop headers (Connection, Keep-Alive, Transfer-Encoding, ...) and adds
# x-forwarded-proto. (x-request-id is not added: envoy.yaml sets generate_request_id: false.)
# Kong passes the headers as received.
ENVOY_REMOVED = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
ENVOY_ADDED = [("x-forwarded-proto", "http")]


@dataclass
class Scenario:
    name: str
    method: str
    target: str                                  # path and query, as sent
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | None = None                    # None: no body, no Content-Length
    chunked: bool = False                        # send the body with Transfer-Encoding: chunked
    status: int = 200
    reply: bytes = SENT
    # Expected records, (topic, key) each; None: not checked (the record of a timed-out call
    # may still land after the client's answer).
    records: list[tuple[str, str | None]] | None = field(default_factory=lambda: [(TOPIC, None)])
    uri_args: dict = field(default_factory=dict)
    body_fields: dict = field(default_factory=dict)  # expected body, body_args, body_base64
    fault: dict | None = None                    # queued on the REST proxy before the request
    rest_proxy_down: bool = False                # REST proxy stopped during the request
    min_elapsed: float = 0.0                     # the answer must not come sooner (seconds)
    max_elapsed: float = 15.0

    def expected_message(self, host: str = "envoy") -> dict:
        """The message Kong's handler builds from this request, with the request headers as
        `host` ("envoy" or "kong") hands them to the filter."""
        sent = [("host", HOST)] + [(k.lower(), v) for k, v in self.headers]
        if self.body is not None:
            sent.append(("transfer-encoding", "chunked") if self.chunked
                        else ("content-length", str(len(self.body))))
        if host == "envoy":
            seen = [(k, v) for k, v in sent if k not in ENVOY_REMOVED] + ENVOY_ADDED
        else:
            seen = sent
        headers: dict = {}
        for k, v in seen:
            if k in headers:
                headers[k] = (headers[k] if isinstance(headers[k], list) else [headers[k]]) + [v]
            else:
                headers[k] = v
        return {"method": self.method, "headers": headers, "uri": self.target,
                "uri_args": self.uri_args, **self.body_fields}


def raw(body: bytes, args) -> dict:
    """body sent as is, with its parsed arguments (None: no body_args, as for invalid JSON)."""
    fields = {"body": body.decode()}
    if args is not None:
        fields["body_args"] = args
    return fields


def b64(body: bytes) -> dict:
    """Unparseable content type: body base64-encoded, body_args {}."""
    return {"body": base64.b64encode(body).decode(), "body_args": {}, "body_base64": True}


JSON_BODY = b'{"id": 42, "items": ["a", "b"], "ok": true, "note": null, "price": 9.5}'
FORM_BODY = b"a=1&b=two+words&b=3&c&d=%26"
BOUNDARY = "e2eBoundary7d29"
MULTIPART_BODY = (
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nkafka\r\n"
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"lang\"\r\n\r\nrust\r\n"
    f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.txt\"\r\n"
    f"Content-Type: text/plain\r\n\r\nhello file\r\n"
    f"--{BOUNDARY}--\r\n").encode()
BINARY_BODY = bytes(range(256)) * 4
AT_LIMIT = b"a" * MAX_BODY
OVER_LIMIT = b"a" * (MAX_BODY + 1)

SCENARIOS = [
    Scenario("get_without_body", "GET", "/kafka/get?a=1&b=x%20y&b=2&flag&empty=",
             headers=[("Accept", "application/json"), ("User-Agent", "kafka-upstream-e2e/1"),
                      ("X-Multi", "one"), ("X-Multi", "two")],
             uri_args={"a": "1", "b": ["x y", "2"], "flag": True, "empty": ""},
             body_fields={"body": "", "body_args": {}, "body_base64": True}),
    Scenario("post_json", "POST", "/kafka/orders?source=web",
             headers=[("Content-Type", "application/json")], body=JSON_BODY,
             uri_args={"source": "web"}, body_fields=raw(JSON_BODY, json.loads(JSON_BODY))),
    Scenario("post_form", "POST", "/kafka/form",
             headers=[("Content-Type", "application/x-www-form-urlencoded")], body=FORM_BODY,
             body_fields=raw(FORM_BODY, {"a": "1", "b": ["two words", "3"], "c": True,
                                         "d": "&"})),
    Scenario("post_multipart", "POST", "/kafka/upload",
             headers=[("Content-Type", f"multipart/form-data; boundary={BOUNDARY}")],
             body=MULTIPART_BODY,
             body_fields=raw(MULTIPART_BODY, {"name": "kafka", "lang": "rust",
                                              "file": "hello file"})),
    Scenario("post_binary", "POST", "/kafka/blob",
             headers=[("Content-Type", "application/octet-stream")], body=BINARY_BODY,
             body_fields=b64(BINARY_BODY)),
    Scenario("post_text_plain", "POST", "/kafka/text",
             headers=[("Content-Type", "text/plain")], body=b"hello, kafka",
             body_fields=raw(b"hello, kafka", {})),
    Scenario("post_text_plain_charset", "POST", "/kafka/text",
             headers=[("Content-Type", "text/plain; charset=utf-8")], body=b"hello, kafka",
             body_fields=b64(b"hello, kafka")),
    Scenario("post_without_content_type", "POST", "/kafka/raw", body=b"no content type",
             body_fields=b64(b"no content type")),
    Scenario("post_invalid_json", "POST", "/kafka/bad-json",
             headers=[("Content-Type", "application/json")], body=b'{"id": 42,',
             body_fields=raw(b'{"id": 42,', None)),
    Scenario("body_at_limit", "POST", "/kafka/at-limit",
             headers=[("Content-Type", "application/octet-stream")], body=AT_LIMIT,
             body_fields=b64(AT_LIMIT)),
    Scenario("body_over_limit", "POST", "/kafka/over-limit",
             headers=[("Content-Type", "application/octet-stream")], body=OVER_LIMIT,
             status=413, reply=TOO_LARGE, records=[]),
    Scenario("chunked_json", "POST", "/kafka/chunked",
             headers=[("Content-Type", "application/json")], body=JSON_BODY, chunked=True,
             body_fields=raw(JSON_BODY, json.loads(JSON_BODY))),
    Scenario("chunked_over_limit", "POST", "/kafka/chunked-over-limit",
             headers=[("Content-Type", "application/octet-stream")], body=OVER_LIMIT,
             chunked=True, status=413, reply=TOO_LARGE, records=[]),
    Scenario("topic_from_query", "POST", "/kafka?topics=orders&key=order-7",
             headers=[("Content-Type", "text/plain")], body=b"order 7",
             records=[("orders", "order-7")], uri_args={"topics": "orders", "key": "order-7"},
             body_fields=raw(b"order 7", {})),
    Scenario("two_topics_from_query", "POST", "/kafka?topics=orders,audit",
             headers=[("Content-Type", "text/plain")], body=b"to both",
             records=[("audit", None), ("orders", None)], uri_args={"topics": "orders,audit"},
             body_fields=raw(b"to both", {})),
    Scenario("disallowed_topic", "POST", "/kafka?topics=orders,nope",
             headers=[("Content-Type", "text/plain")], body=b"x",
             status=400, reply=NOT_ALLOWED, records=[]),
    Scenario("rest_proxy_stopped_post", "POST", "/kafka/down",
             headers=[("Content-Type", "application/json")], body=b'{"a":1}',
             rest_proxy_down=True, status=502, reply=BAD_GATEWAY, records=[]),
    Scenario("rest_proxy_stopped_get", "GET", "/kafka/down", rest_proxy_down=True,
             status=502, reply=BAD_GATEWAY, records=[]),
    Scenario("rest_proxy_500", "POST", "/kafka/e500", headers=[("Content-Type", "text/plain")],
             body=b"x", fault={"kind": "http_error", "status": 500, "error_code": 50001,
                               "message": "injected"},
             status=502, reply=BAD_GATEWAY, records=[]),
    Scenario("rest_proxy_record_error", "POST", "/kafka/e50002",
             headers=[("Content-Type", "text/plain")], body=b"x",
             fault={"kind": "record_error", "error_code": 50002, "message": "injected"},
             status=502, reply=BAD_GATEWAY, records=[]),
    # The router race (issue 5): with the REST proxy answering only after 1.5 s, a route answer
    # started when the headers continued would reach the client long before the filter's.
    Scenario("slow_rest_proxy_post", "POST", "/kafka/slow",
             headers=[("Content-Type", "application/json")], body=JSON_BODY,
             fault={"kind": "delay", "delay_ms": 1500}, min_elapsed=1.4,
             body_fields=raw(JSON_BODY, json.loads(JSON_BODY))),
    Scenario("slow_rest_proxy_get", "GET", "/kafka/slow", fault={"kind": "delay", "delay_ms": 1500},
             min_elapsed=1.4, body_fields={"body": "", "body_args": {}, "body_base64": True}),
    # A REST proxy slower than the filter's timeout (5 s): 504. The REST proxy still produces
    # the record once its delay is over (as with Kong), so records are not checked.
    Scenario("rest_proxy_timeout", "POST", "/kafka/timeout",
             headers=[("Content-Type", "text/plain")], body=b"late",
             fault={"kind": "delay", "delay_ms": 6500}, status=504, reply=TIMED_OUT,
             records=None, min_elapsed=REST_TIMEOUT_S - 0.2, max_elapsed=REST_TIMEOUT_S + 3),
]
BY_NAME = {s.name: s for s in SCENARIOS}


# ---------------------------------------------------------------------------------------------
# Sending.

@dataclass
class Reply:
    status: int
    body: bytes
    headers: list[tuple[str, str]]
    elapsed: float


def send(port: int, sc: Scenario, timeout: float = 20.0) -> Reply:
    """Sends the request with exactly the scenario's header lines (plus Host and the body's
    framing), so the expected message's headers are known byte for byte."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    started = time.monotonic()
    try:
        conn.putrequest(sc.method, sc.target, skip_host=True, skip_accept_encoding=True)
        conn.putheader("Host", HOST)
        for k, v in sc.headers:
            conn.putheader(k, v)
        if sc.body is not None:
            if sc.chunked:
                conn.putheader("Transfer-Encoding", "chunked")
            else:
                conn.putheader("Content-Length", str(len(sc.body)))
        conn.endheaders()
        if sc.body is not None:
            try:
                if sc.chunked:
                    step = 16384
                    for i in range(0, len(sc.body), step):
                        part = sc.body[i:i + step]
                        conn.send(b"%x\r\n%s\r\n" % (len(part), part))
                    conn.send(b"0\r\n\r\n")
                else:
                    conn.send(sc.body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the gateway answered (413) and closed before the whole body was sent
        resp = conn.getresponse()
        body = resp.read()
        return Reply(resp.status, body, [(k.lower(), v) for k, v in resp.getheaders()],
                     time.monotonic() - started)
    except (socket.timeout, TimeoutError) as e:
        raise AssertionError(f"{sc.name}: no answer within {timeout:.0f} s") from e
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------
# Running one scenario against one gateway stack.

@dataclass
class Outcome:
    reply: Reply
    records: list  # (topic, partition, offset, key bytes | None, value bytes), sorted
    rest_requests: list  # relay.RecordedRequest, in arrival order

    def summary(self) -> str:
        return (f"{self.reply.status} {self.reply.body!r} in {self.reply.elapsed:.2f} s, "
                f"{len(self.records)} record(s), {len(self.rest_requests)} REST request(s)")


def run(stack, sc: Scenario) -> Outcome:
    stack.check_gateway_alive()
    stack.rest_proxy.clear_faults()
    if sc.fault:
        stack.rest_proxy.add_fault(sc.fault)
    marks = stack.kafka.watermarks()
    mark = stack.relay.mark()
    if sc.rest_proxy_down:
        stack.stop_rest_proxy()
    try:
        reply = send(stack.port, sc)
        # Calls still in flight (a timed-out call the REST proxy answers late) finish first, so
        # that their records do not count for the next scenario.
        stack.relay.wait_idle(15.0)
        records = stack.kafka.read_since(marks)
        rest = stack.relay.since(mark)
    finally:
        if sc.rest_proxy_down:
            stack.start_rest_proxy()
        stack.rest_proxy.clear_faults()
    stack.check_gateway_alive()
    return Outcome(reply, records, rest)


def local_reply_body(body: bytes, host: str) -> bytes:
    """A filter's local reply body as the client gets it behind `host`: ngx_wasm_module appends
    a line feed to a non-empty one (src/http/ngx_http_wasm_local_response.c:132-141), and
    host-sim's kong profile does too."""
    return body + b"\n" if host == "kong" and body else body


def check(sc: Scenario, out: Outcome, gateway: str, host: str = "envoy") -> None:
    """The client's answer and the records against the scenario's expectations."""
    r = out.reply
    reply = local_reply_body(sc.reply, host)
    assert (r.status, r.body) == (sc.status, reply), (
        f"{gateway} {sc.name}: client got {r.status} {r.body!r}, expected {sc.status} "
        f"{reply!r}" + (" (the route's direct_response: the filter was bypassed)"
                        if r.body == TRIPWIRE else ""))
    ctype = dict(r.headers).get("content-type")
    assert ctype == "application/json", f"{gateway} {sc.name}: content-type {ctype!r}"
    assert sc.min_elapsed <= r.elapsed <= sc.max_elapsed, (
        f"{gateway} {sc.name}: answered in {r.elapsed:.2f} s, expected between "
        f"{sc.min_elapsed} and {sc.max_elapsed} s")
    if sc.records is None:
        return
    got = sorted((t, k.decode() if k is not None else None, json.loads(v))
                 for t, _p, _o, k, v in out.records)
    want = sorted((t, k, sc.expected_message(host)) for t, k in sc.records)
    assert len(got) == len(want), (
        f"{gateway} {sc.name}: {len(got)} record(s) in Kafka, expected {len(want)}: "
        f"{[(t, k, m) for t, k, m in got]}")
    for (gt, gk, gm), (wt, wk, wm) in zip(got, want):
        assert (gt, gk) == (wt, wk), f"{gateway} {sc.name}: record in {gt} key {gk!r}, " \
                                     f"expected {wt} key {wk!r}"
        assert gm == wm, (f"{gateway} {sc.name}: message in {gt} differs from Kong's:\n"
                          f"  got      {json.dumps(gm, sort_keys=True)}\n"
                          f"  expected {json.dumps(wm, sort_keys=True)}")
    if sc.status in (400, 413):
        assert out.rest_requests == [], f"{gateway} {sc.name}: the REST proxy was called"


# Headers of the REST request whose values legitimately change between two requests.
VOLATILE_REST_HEADERS = {"x-request-id"}


def rest_view(req) -> dict:
    """A REST request as compared between gateways: everything but the framing."""
    body: object = req.body.decode(errors="replace")
    try:
        body = json.loads(req.body)
    except ValueError:
        pass
    headers: dict = {}
    for k, v in req.headers:
        if k in ("content-length", "transfer-encoding"):
            continue
        headers.setdefault(k, []).append("<volatile>" if k in VOLATILE_REST_HEADERS else v)
    return {"method": req.method, "path": req.path, "headers": headers, "body": body}


def differences(a: Outcome, b: Outcome, an: str = "envoy", bn: str = "host-sim") -> list[str]:
    """Every observable difference between two gateways' outcomes of one scenario."""
    diffs = []
    if (a.reply.status, a.reply.body) != (b.reply.status, b.reply.body):
        diffs.append(f"client answer: {an} {a.reply.status} {a.reply.body!r}, "
                     f"{bn} {b.reply.status} {b.reply.body!r}")
    # Every header of the client answer but Date (its value is the time).
    ah = sorted((k, v) for k, v in a.reply.headers if k != "date")
    bh = sorted((k, v) for k, v in b.reply.headers if k != "date")
    if ah != bh:
        diffs.append(f"client answer headers: {an} {ah}, {bn} {bh}")
    ar = [(t, p, k, v) for t, p, _o, k, v in a.records]
    br = [(t, p, k, v) for t, p, _o, k, v in b.records]
    if ar != br:
        if len(ar) != len(br):
            diffs.append(f"records: {an} {len(ar)}, {bn} {len(br)}")
        for x, y in zip(ar, br):
            if x[:3] != y[:3]:
                diffs.append(f"record topic/partition/key: {an} {x[:3]}, {bn} {y[:3]}")
            if x[3] != y[3]:
                try:
                    same = json.loads(x[3]) == json.loads(y[3])
                except ValueError:
                    same = False
                diffs.append(f"record value{' bytes (same parsed JSON)' if same else ''}:\n"
                             f"    {an}: {x[3][:2000]!r}\n    {bn}: {y[3][:2000]!r}")
    av = sorted((rest_view(r) for r in a.rest_requests), key=lambda v: json.dumps(v, sort_keys=True))
    bv = sorted((rest_view(r) for r in b.rest_requests), key=lambda v: json.dumps(v, sort_keys=True))
    if len(av) != len(bv):
        diffs.append(f"REST requests: {an} {len(av)}, {bn} {len(bv)}")
    for x, y in zip(av, bv):
        for key in ("method", "path", "body"):
            if x[key] != y[key]:
                diffs.append(f"REST request {key}: {an} {x[key]!r}, {bn} {y[key]!r}")
        for name in sorted(set(x["headers"]) | set(y["headers"])):
            if x["headers"].get(name) != y["headers"].get(name):
                diffs.append(f"REST request header {name}: {an} {x['headers'].get(name)}, "
                             f"{bn} {y['headers'].get(name)}")
    return diffs
