"""make bench, parts 1-3 (issue 7): runs the bench binary (parts 1 and 2: guest cost, host-sim
overhead, warm start) or reads its JSON, then part 3, gateway throughput and latency under wrk
(Debian's), loopback only, every run bounded in time; then prints the combined table of parts 1-3
with their baselines and the issue's targets (reported, never asserted).

 3a. `host-sim serve` with the embedded REST proxy, the filter in synchronous mode against the
     same filter in asynchronous mode (`producer_async: true`): same request, same kind of REST
     proxy (each process its own embedded one), wrk -c16: req/s, p50, p99 and the ratio; then
     the same pair with the REST proxy answering every produce request REMOTE_REST_DELAY_MS late
     (its `delay` fault), as a REST proxy on another host would: the in-memory pair is the best
     case for synchronous mode, the delayed pair shows what asynchronous mode is for.
 3b. Real Envoy 1.40 (the e2e venv's, --concurrency 1) running the committed envoy.yaml with free
     ports, its REST proxy `host-sim rest-proxy` in memory, against the same Envoy without the
     wasm filter (the buffer filter kept), its route answering 200 with a direct_response: the
     filter's added latency at p50 and p99 (wrk -c1: one request at a time, so latency is service
     time, not queueing) and req/s (wrk -c16). The filter runs in the committed synchronous mode
     (the added latency includes the REST proxy's round trip) and in asynchronous mode (the
     filter's own cost).

Each target runs `--reps` times, the targets of a part interleaved so drift hits them alike; the
median of the runs is reported. wrk runs on a CPU of its own (the last one), the servers on the
others (--no-pin: anywhere): on a 2-core machine this steadies the figures. The filter
configuration is envoy.yaml's everywhere (every forward_* flag on), and the request is the same
1 KiB JSON POST as in part 1.

Usage (make bench runs it with the e2e venv's Python and --parts12-binary target/release/bench):
  build/venv/bin/python tests/e2e/bench_gateway.py
      [--parts12-binary target/release/bench | --parts12 target/bench/results.json]
      [--out-dir target/bench] [--duration 2] [--reps 5] [--workers 1] [--no-pin]
Writes OUT_DIR/gateway.json (every run) and OUT_DIR/summary.json (the combined table's rows, and
the CPU time other processes took during the run: the figures of a busy machine are not those of
an idle one).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import requests
import yaml

from conftest import (HOST_SIM, REPO, WASM, EnvoyPorts, envoy_filter_config, render_envoy_yaml,
                      start_envoy, with_filter_config, _require_file)
from procs import Proc, StartError, free_port, port_open, stop_all

SENT = b'{"message":"message sent"}'
PATH = "/orders/checkout?source=web&tag=a&tag=b"
STARTUP_TIMEOUT = 60.0
LATENCY_CONNECTIONS = 1
THROUGHPUT_CONNECTIONS = 16
# Part 3a's second pair: the embedded REST proxy answers every produce request this late, as a
# REST proxy on another host in front of a replicated cluster would. Synchronous requests wait
# for it (their throughput is at most connections / delay); asynchronous ones do not.
REMOTE_REST_DELAY_MS = 10

TARGETS = {
    "guest_1kib_us": 5.0,         # filter guest cost for a 1 KiB JSON body, at most
    "mb_per_s_1mib": 300.0,       # 1 MiB binary body, at least
    "warm_start_ms": 5.0,         # load from the precompiled cache, at most
    "async_sync_ratio": 10.0,     # async req/s over sync req/s, at least
    "envoy_added_p50_us": 50.0,   # Envoy with the filter minus Envoy without it, p50, at most
}


def json_body(size: int) -> bytes:
    """The 1 KiB JSON body of part 1 (bench/src/main.rs json_body), byte for byte."""
    out = '{"items":['
    i = 0
    while len(out) + 64 < size:
        if i > 0:
            out += ","
        out += f'{{"id":{i},"name":"item-{i}","price":{i * 3}.5,"tags":["a","b/c"]}}'
        i += 1
    out += "]}"
    while len(out) < size:
        out = out[:-2] + " " + out[-2:]
    return out.encode()


# ---------------------------------------------------------------------------------------------
# wrk.

_UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 6e7}


def _to_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(f"wrk: unreadable time {text!r}")
    return float(m[1]) * _UNIT_US[m[2]]


def parse_wrk(out: str) -> dict:
    """req/s, p50/p90/p99 (µs), counts of wrk --latency's output."""
    done = re.search(r"(\d+) requests in ([\d.]+(?:us|ms|s|m)),", out)
    if not done:
        raise ValueError(f"wrk: no 'N requests in' line in:\n{out}")
    total, seconds = int(done[1]), _to_us(done[2]) / 1e6
    pct = {int(p): _to_us(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M)}
    if 50 not in pct or 99 not in pct:
        raise ValueError(f"wrk: no latency distribution in:\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = int(non2xx[1]) if non2xx else 0
    return {
        "requests": total,
        "seconds": seconds,
        "non_2xx": non2xx,
        "socket_errors": sum(int(x) for x in errors.groups()) if errors else 0,
        "req_per_s": total / seconds,
        "ok_req_per_s": (total - non2xx) / seconds,
        "p50_us": pct[50],
        "p90_us": pct.get(90),
        "p99_us": pct[99],
    }


class Wrk:
    def __init__(self, script: Path, duration: float, cpus: set[int] | None = None):
        self.binary = shutil.which("wrk")
        if self.binary is None:
            raise SystemExit("bench: wrk is not installed (`make bench` installs it: "
                             "apt-get install -y wrk)")
        self.script = script
        self.duration = duration
        self.preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        self.version = subprocess.run([self.binary, "-v"], capture_output=True, text=True,
                                      timeout=10).stdout.splitlines()[0].strip()

    def run(self, port: int, connections: int, duration: float | None = None) -> dict:
        seconds = duration or self.duration
        argv = [self.binary, "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency",
                "--timeout", "5s", "-s", str(self.script), f"http://127.0.0.1:{port}{PATH}"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30,
                              preexec_fn=self.preexec)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n"
                               f"{done.stdout}{done.stderr}")
        result = parse_wrk(done.stdout)
        result["connections"] = connections
        return result


def write_wrk_script(path: Path, body: bytes) -> None:
    assert b"]==]" not in body
    path.write_text('wrk.method = "POST"\n'
                    'wrk.headers["Content-Type"] = "application/json"\n'
                    f"wrk.body = [==[{body.decode()}]==]\n")


# ---------------------------------------------------------------------------------------------
# The gateways.

def check_answers(port: int, body: bytes, what: str) -> None:
    """One request as wrk sends it: the gateway must answer 200 {"message":"message sent"}."""
    r = requests.post(f"http://127.0.0.1:{port}{PATH}", data=body,
                      headers={"Content-Type": "application/json"}, timeout=10)
    if (r.status_code, r.content) != (200, SENT):
        raise StartError(f"{what}: answered {r.status_code} {r.content[:300]!r}, expected 200 "
                         f"{SENT!r}")


class Gateway:
    """A gateway under test and how to read its filter's messages_sent counter (None: no
    filter, or not asynchronous)."""

    def __init__(self, name: str, label: str, port: int, proc: Proc, sent=None,
                 admin: int | None = None):
        self.name = name
        self.admin = admin
        self.label = label
        self.port = port
        self.proc = proc
        self.sent = sent

    def drain(self, before: int, acked: int, timeout: float = 15.0) -> bool:
        """Waits until the filter has sent at least the `acked` records answered 200 since its
        counter read `before`, so that no batch of one run is still going out during the next."""
        if self.sent is None:
            return True
        deadline = time.monotonic() + timeout
        while self.sent() - before < acked:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True


def hostsim_sent(admin: int):
    def read() -> int:
        stats = requests.get(f"http://127.0.0.1:{admin}/stats", timeout=5).json()
        return int(stats["wasmcustom.kafka_upstream.messages_sent"]["value"])
    return read


def envoy_sent(admin: int):
    def read() -> int:
        text = requests.get(f"http://127.0.0.1:{admin}/stats",
                            params={"filter": r"^wasmcustom\.kafka_upstream\.messages_sent$"},
                            timeout=5).text
        m = re.search(r"messages_sent: (\d+)", text)
        if not m:
            raise RuntimeError(f"Envoy stats: no messages_sent counter in {text!r}")
        return int(m[1])
    return read


def envoy_connections(admin: int) -> dict[str, int]:
    """Downstream connections and requests Envoy's listener saw. wrk keeps its connections open,
    so the connections must be few: many would mean Envoy closed them after its answers, and
    the figures would include a TCP connect per request."""
    text = requests.get(f"http://127.0.0.1:{admin}/stats",
                        params={"filter": r"^http\.kafka_upstream\.downstream_(cx|rq)_total$"},
                        timeout=5).text
    values = {k.strip(): int(v) for k, v in (line.split(":") for line in text.splitlines())}
    out = {"connections": values["http.kafka_upstream.downstream_cx_total"],
           "requests": values["http.kafka_upstream.downstream_rq_total"]}
    if out["connections"] * 20 > out["requests"]:
        print(f"bench: WARNING Envoy (admin {admin}) opened {out['connections']} connections for "
              f"{out['requests']} requests: wrk's connections were not kept alive",
              file=sys.stderr)
    return out


def start_hostsim_serve(name: str, config: dict, workers: int, run_dir: Path,
                        rest_delay_ms: int = 0) -> tuple[Proc, int, int]:
    config_path = run_dir / f"{name}.json"
    config_path.write_text(json.dumps(config))
    port, rest, admin = free_port(), free_port(), free_port()
    proc = Proc(name, [
        _require_file(HOST_SIM, "run `make host-sim`"), "serve",
        "--filter", _require_file(WASM, "run `make wasm`"), "--config", config_path,
        "--listen", f"127.0.0.1:{port}", "--embedded-rest-proxy", f"127.0.0.1:{rest}",
        "--admin", f"127.0.0.1:{admin}", "--workers", str(workers), "--no-reload",
    ], run_dir / f"{name}.log")

    def ready() -> bool:
        ok = requests.get(f"http://127.0.0.1:{rest}/_sim/health", timeout=2).status_code == 200
        return ok and port_open(port)

    proc.wait_until("listening, its embedded REST proxy healthy", ready, STARTUP_TIMEOUT, 0.1)
    if rest_delay_ms:
        # The REST proxy's fault API (host-sim/rest-proxy/src/faults.rs): a `delay` fault
        # delays that many produce requests, then lets them produce normally.
        fault = {"kind": "delay", "delay_ms": rest_delay_ms, "count": 2**32 - 1}
        answer = requests.post(f"http://127.0.0.1:{rest}/_sim/faults", json=fault, timeout=5)
        if answer.status_code // 100 != 2:
            raise proc.fail(f"the REST proxy refused the delay fault: {answer.status_code} "
                            f"{answer.text}")
    return proc, port, admin


def without_wasm_filter(text: str) -> str:
    """envoy.yaml without the wasm filter, its route answering 200 with the filter's own body:
    the same Envoy doing everything but the filter's work. The buffer filter stays: without it
    the route would answer at the request headers, before the body is read, and Envoy would then
    close the connection after every answer (`connection: close`), so the baseline would measure
    a TCP connect per request."""
    doc = yaml.safe_load(text)
    hcm = doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    kept = [f for f in hcm["http_filters"] if f["name"] != "envoy.filters.http.wasm"]
    assert len(kept) == 2 and len(hcm["http_filters"]) == 3, hcm["http_filters"]
    hcm["http_filters"] = kept
    (route,) = hcm["route_config"]["virtual_hosts"][0]["routes"]
    route["direct_response"] = {"status": 200, "body": {"inline_string": SENT.decode()}}
    route["response_headers_to_add"] = [
        {"header": {"key": "content-type", "value": "application/json"},
         "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
    return yaml.safe_dump(doc, sort_keys=False)


# ---------------------------------------------------------------------------------------------
# Measuring.

def median_of(runs: list[dict]) -> dict:
    keys = ("req_per_s", "ok_req_per_s", "p50_us", "p90_us", "p99_us")
    out = {k: statistics.median(r[k] for r in runs) for k in keys}
    out["non_2xx"] = sum(r["non_2xx"] for r in runs)
    out["socket_errors"] = sum(r["socket_errors"] for r in runs)
    out["runs"] = runs
    return out


def measure(wrk: Wrk, gateways: list[Gateway], connections: int, reps: int) -> dict[str, dict]:
    """`reps` rounds; in each, every gateway gets one wrk run (interleaved)."""
    runs: dict[str, list[dict]] = {g.name: [] for g in gateways}
    for rep in range(reps):
        for g in gateways:
            before = g.sent() if g.sent else 0
            result = wrk.run(g.port, connections)
            acked = result["requests"] - result["non_2xx"]
            result["drained"] = g.drain(before, acked)
            if not result["drained"]:
                print(f"bench: WARNING {g.label}: the filter had not sent the {acked} records "
                      f"answered 200 within 15 s of the run's end", file=sys.stderr)
            if not g.proc.alive():
                raise g.proc.fail("exited during the benchmark")
            runs[g.name].append(result)
            print(f"  {g.label:<44} c{connections:<3} rep {rep + 1}/{reps}: "
                  f"{result['ok_req_per_s']:>9.0f} req/s  p50 {result['p50_us']:>8.1f} µs  "
                  f"p99 {result['p99_us']:>8.1f} µs"
                  + (f"  non-2xx {result['non_2xx']}" if result["non_2xx"] else ""), flush=True)
    return {name: median_of(r) for name, r in runs.items()}


def warm_up(wrk: Wrk, gateways: list[Gateway]) -> None:
    for g in gateways:
        before = g.sent() if g.sent else 0
        result = wrk.run(g.port, THROUGHPUT_CONNECTIONS, duration=1)
        g.drain(before, result["requests"] - result["non_2xx"])


def part_3a(wrk: Wrk, filter_config: dict, body: bytes, args, run_dir: Path) -> dict:
    print(f"3a. host-sim serve (--workers {args.workers}) + embedded REST proxy: sync vs async",
          flush=True)
    gateways = []
    for name, is_async, delay in (("sync", False, 0), ("async", True, 0),
                                  ("sync_remote", False, REMOTE_REST_DELAY_MS),
                                  ("async_remote", True, REMOTE_REST_DELAY_MS)):
        proc, port, admin = start_hostsim_serve(f"host-sim-{name}",
                                                {**filter_config, "producer_async": is_async},
                                                args.workers, run_dir, delay)
        label = f"host-sim serve, filter {'async' if is_async else 'sync'}" + (
            f", REST +{delay} ms" if delay else "")
        gateways.append(Gateway(name, label, port, proc,
                                hostsim_sent(admin) if is_async else None))
    try:
        for g in gateways:
            check_answers(g.port, body, g.label)
        warm_up(wrk, gateways)
        result = measure(wrk, gateways, THROUGHPUT_CONNECTIONS, args.reps)
    finally:
        for g in gateways:
            g.proc.stop()
    result["workers"] = args.workers
    result["connections"] = THROUGHPUT_CONNECTIONS
    result["ratio_async_sync"] = result["async"]["ok_req_per_s"] / result["sync"]["ok_req_per_s"]
    result["remote_rest_delay_ms"] = REMOTE_REST_DELAY_MS
    result["ratio_async_sync_remote"] = (result["async_remote"]["ok_req_per_s"]
                                         / result["sync_remote"]["ok_req_per_s"])
    return result


def part_3b(wrk: Wrk, body: bytes, args, run_dir: Path) -> dict:
    print("3b. real Envoy 1.40 (--concurrency 1): the filter against a direct_response without it",
          flush=True)
    rest = free_port()
    rest_proxy = Proc("rest-proxy", [_require_file(HOST_SIM, "run `make host-sim`"), "rest-proxy",
                                     "--listen", f"127.0.0.1:{rest}"], run_dir / "rest-proxy.log")
    gateways = []
    try:
        rest_proxy.wait_until(
            "healthy", lambda: requests.get(f"http://127.0.0.1:{rest}/_sim/health",
                                            timeout=2).status_code == 200, STARTUP_TIMEOUT, 0.1)
        variants = [
            ("baseline", "Envoy, direct_response, no wasm filter", without_wasm_filter),
            ("filter_sync", "Envoy + filter (sync, envoy.yaml)", lambda t: t),
            ("filter_async", "Envoy + filter (async)",
             lambda t: with_filter_config(t, producer_async=True)),
        ]
        for name, label, transform in variants:
            ports = EnvoyPorts(listener=free_port(), admin=free_port(), cluster=rest)
            config = run_dir / f"envoy-{name}.yaml"
            config.write_text(transform(render_envoy_yaml(ports, WASM)))
            proc = start_envoy(f"envoy-{name}", config, ports, run_dir)
            gateways.append(Gateway(name, label, ports.listener, proc,
                                    envoy_sent(ports.admin) if name == "filter_async" else None,
                                    admin=ports.admin))
        for g in gateways:
            check_answers(g.port, body, g.label)
        warm_up(wrk, gateways)
        latency = measure(wrk, gateways, LATENCY_CONNECTIONS, args.reps)
        throughput = measure(wrk, gateways, THROUGHPUT_CONNECTIONS, args.reps)
        connections = {g.name: envoy_connections(g.admin) for g in gateways}
    finally:
        for g in gateways:
            g.proc.stop()
        rest_proxy.stop()
    base = latency["baseline"]
    added = {name: {"p50_us": latency[name]["p50_us"] - base["p50_us"],
                    "p99_us": latency[name]["p99_us"] - base["p99_us"]}
             for name in ("filter_sync", "filter_async")}
    return {"envoy_concurrency": 1, "latency": latency, "throughput": throughput,
            "downstream_connections_and_requests": connections,
            "latency_connections": LATENCY_CONNECTIONS,
            "throughput_connections": THROUGHPUT_CONNECTIONS, "added": added}


class CpuWatch:
    """CPU time the machine spent outside this process and its reaped children (servers stopped,
    wrk runs, the bench binary) over a phase: user, nice, system and steal time from /proc/stat
    minus our own. Interrupt time is left out (loopback traffic is partly accounted there)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample() -> tuple[float, float, float]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        user, nice, system, steal = fields[0], fields[1], fields[2], fields[7]
        busy = (user + nice + system + steal) / os.sysconf("SC_CLK_TCK")
        own = resource.getrusage(resource.RUSAGE_SELF)
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        ours = own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime
        return time.monotonic(), busy, ours

    def stop(self) -> dict:
        (t0, busy0, ours0), (t1, busy1, ours1) = self.start, self._sample()
        wall = t1 - t0
        other = max(0.0, (busy1 - busy0) - (ours1 - ours0))
        return {"wall_s": wall, "busy_cpu_s": busy1 - busy0, "ours_cpu_s": ours1 - ours0,
                "other_cpu_s": other, "share": other / (wall * (os.cpu_count() or 1))}


# ---------------------------------------------------------------------------------------------
# The combined table.

def machine() -> str:
    cpu = "unknown cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def verdict(value: float | None, target: float, at_most: bool) -> str:
    if value is None:
        return ""
    ok = value <= target if at_most else value >= target
    return "met" if ok else "MISSED"


def us(value: float) -> str:
    """A time in µs with the digits that matter."""
    if value < 10:
        return f"{value:.2f} µs"
    return f"{value:.1f} µs" if value < 100 else f"{value:,.0f} µs"


def summary_rows(p12: dict | None, gw: dict) -> list[dict]:
    """Every figure, its baseline, the comparison and the target (reported, not asserted)."""
    rows = []

    def row(section, figure, value, unit, baseline="", compare="", target="", status=""):
        rows.append({"section": section, "figure": figure, "value": value, "unit": unit,
                     "baseline": baseline, "compare": compare, "target": target,
                     "status": status})

    if p12:
        s1 = "1. filter guest cost per request (host-sim, envoy profile, every forward_* on)"
        for g in p12["guest"]:
            target, status = "", ""
            if g["case"] == "1 KiB JSON":
                target = f"<= {TARGETS['guest_1kib_us']:g} µs"
                status = verdict(g["filter_cost_us"], TARGETS["guest_1kib_us"], True)
            row(s1, f"{g['case']}: filter - no-op", g["filter_cost_us"], "µs",
                f"no-op {us(g['noop_request_us'])}, native {us(g['native_baseline_us'])}",
                f"wasm/native {g['ratio_wasm_native']:.1f}x", target, status)
            if g["body_bytes"] >= 64 << 10:
                target, status = "", ""
                if g["body_bytes"] >= 1 << 20:
                    target = f">= {TARGETS['mb_per_s_1mib']:g} MB/s"
                    status = verdict(g["mb_per_s"], TARGETS["mb_per_s_1mib"], False)
                native_mbs = g["body_bytes"] / g["native_baseline_us"] if g[
                    "native_baseline_us"] else 0
                row(s1, f"{g['case']}: throughput", g["mb_per_s"], "MB/s",
                    f"native {native_mbs:.0f} MB/s", "", target, status)
        s2 = "2. host-sim"
        bodiless = p12.get("host_overhead_noop_bodiless_us")
        row(s2, "lifecycle, no-op filter, 1 KiB body", p12["host_overhead_noop_request_us"], "µs",
            f"no body {us(bodiless)}" if bodiless is not None else "", "", "")
        row(s2, "warm start (precompiled cache)", p12["warm_start_cached_ms"], "ms",
            f"fresh compile {p12['fresh_compile_ms']:.1f} ms",
            f"{p12['ratio_fresh_warm']:.0f}x faster", f"<= {TARGETS['warm_start_ms']:g} ms",
            verdict(p12["warm_start_cached_ms"], TARGETS["warm_start_ms"], True))
        row(s2, "VM start + root context + configure", p12["vm_start_and_configure_ms"], "ms")
    a = gw["host_sim"]
    s3a = (f"3a. host-sim serve + embedded REST proxy, wrk -c{a['connections']}, "
           f"--workers {a['workers']}; the same 1 KiB JSON POST and filter config"
           + (f"\n    REST +{a['remote_rest_delay_ms']} ms: the REST proxy answers each produce "
              f"request that late (a remote proxy)" if "remote_rest_delay_ms" in a else ""))
    for suffix, label, ratio in (
            ("", "REST in memory", a["ratio_async_sync"]),
            ("_remote", f"REST +{a.get('remote_rest_delay_ms', 0)} ms", a.get("ratio_async_sync_remote"))):
        if ratio is None:  # a gateway.json from before the remote pair existed
            continue
        sync, asyn = a[f"sync{suffix}"], a[f"async{suffix}"]
        row(s3a, f"{label}, async: req/s", asyn["ok_req_per_s"], "req/s",
            f"sync {sync['ok_req_per_s']:,.0f} req/s", f"{ratio:.1f}x",
            f">= {TARGETS['async_sync_ratio']:g}x",
            verdict(ratio, TARGETS["async_sync_ratio"], False))
        for p in ("p50", "p99"):
            row(s3a, f"{label}, async: {p}", asyn[f"{p}_us"], "µs", f"sync {us(sync[f'{p}_us'])}",
                f"{asyn[f'{p}_us'] / sync[f'{p}_us']:.2f}x")
    e = gw["envoy"]
    s3b = (f"3b. real Envoy 1.40 (--concurrency 1), REST proxy in memory; latency wrk "
           f"-c{e['latency_connections']}, req/s wrk -c{e['throughput_connections']}\n"
           f"    baseline: the same Envoy without the wasm filter (buffer filter, 200 "
           f"direct_response)")
    base_l, base_t = e["latency"]["baseline"], e["throughput"]["baseline"]
    for name, label in (("filter_sync", "filter sync"), ("filter_async", "filter async")):
        lat, thr = e["latency"][name], e["throughput"][name]
        for p in ("p50", "p99"):
            target, status = "", ""
            if p == "p50":
                target = f"<= {TARGETS['envoy_added_p50_us']:g} µs added"
                status = verdict(e["added"][name]["p50_us"], TARGETS["envoy_added_p50_us"], True)
            row(s3b, f"{label}: {p}", lat[f"{p}_us"], "µs",
                f"no wasm filter {us(base_l[f'{p}_us'])}",
                f"{e['added'][name][f'{p}_us']:+.0f} µs", target, status)
        row(s3b, f"{label}: req/s", thr["ok_req_per_s"], "req/s",
            f"no wasm filter {base_t['ok_req_per_s']:,.0f} req/s",
            f"{thr['ok_req_per_s'] / base_t['ok_req_per_s']:.2f}x")
    return rows


def fmt_value(value: float, unit: str) -> str:
    if unit in ("req/s", "MB/s") or value >= 1000:
        return f"{value:,.0f} {unit}"
    return f"{value:.2f} {unit}" if value < 100 else f"{value:.0f} {unit}"


def print_table(rows: list[dict], header: str) -> None:
    print(f"\n{header}\n")
    line = f"{'figure':<36} {'measured':>13}  {'baseline':<35} {'vs baseline':<16} target"
    print(line)
    print("-" * (len(line) + 18))
    section = None
    for r in rows:
        if r["section"] != section:
            section = r["section"]
            print(section)
        target = f"{r['target']} ({r['status']})" if r["target"] else ""
        print(f"  {r['figure']:<34} {fmt_value(r['value'], r['unit']):>13}  {r['baseline']:<35} "
              f"{r['compare']:<16} {target}".rstrip())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts12", type=Path, help="results.json of bench parts 1 and 2")
    parser.add_argument("--parts12-binary", type=Path,
                        help="run this bench binary first (parts 1 and 2): its JSON goes to "
                             "OUT_DIR/results.json, its own table to OUT_DIR/parts12.txt")
    parser.add_argument("--out-dir", type=Path, default=REPO / "target" / "bench")
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=5, help="wrk runs per target")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the servers and wrk to separate CPUs")
    parser.add_argument("--workers", type=int, default=1,
                        help="host-sim serve --workers (1: one VM, as Envoy --concurrency 1)")
    args = parser.parse_args()

    run_dir = REPO / "build" / "bench" / f"run-{os.getpid()}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    body = json_body(1024)
    script = run_dir / "post.lua"
    write_wrk_script(script, body)
    filter_config = envoy_filter_config(render_envoy_yaml(EnvoyPorts(1, 2, 3), WASM))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    load = {}
    if args.parts12_binary:
        args.parts12 = args.out_dir / "results.json"
        print("1-2. filter guest cost, host-sim overhead, warm start "
              f"({args.parts12_binary}; its table: {args.out_dir / 'parts12.txt'})", flush=True)
        watch = CpuWatch()
        with open(args.out_dir / "parts12.txt", "wb") as table:
            subprocess.run([args.parts12_binary.resolve(), "--out", args.parts12.resolve()],
                           stdout=table, check=True, timeout=600, cwd=REPO)
        load["parts 1-2"] = watch.stop()
    p12 = json.loads(args.parts12.read_text()) if args.parts12 else None
    # On a small machine the figures are steadier with the load generator on a CPU of its own:
    # wrk on the last CPU, this process and every server it starts (they inherit it) on the rest.
    cpus = sorted(os.sched_getaffinity(0))
    pinning = None
    if len(cpus) >= 2 and not args.no_pin:
        pinning = {"servers": cpus[:-1], "wrk": cpus[-1:]}
        os.sched_setaffinity(0, set(pinning["servers"]))
    wrk = Wrk(script, args.duration, set(pinning["wrk"]) if pinning else None)
    started = time.monotonic()
    watch = CpuWatch()
    try:
        host_sim = part_3a(wrk, filter_config, body, args, run_dir)
        envoy = part_3b(wrk, body, args, run_dir)
    except BaseException:
        stop_all()
        print(f"bench: logs and generated files kept in {run_dir}", file=sys.stderr)
        raise
    load["part 3"] = watch.stop()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    gateway = {
        "machine": machine(), "date": stamp, "wrk": wrk.version,
        "duration_s": args.duration, "reps": args.reps, "seconds": time.monotonic() - started,
        "cpu_pinning": pinning, "other_load": load,
        "request": {"method": "POST", "path": PATH, "content_type": "application/json",
                    "body_bytes": len(body)},
        "filter_config": filter_config, "host_sim": host_sim, "envoy": envoy,
    }
    rows = summary_rows(p12, gateway)
    (args.out_dir / "gateway.json").write_text(json.dumps(gateway, indent=2))
    (args.out_dir / "summary.json").write_text(json.dumps(
        {"machine": gateway["machine"], "date": stamp, "other_load": load, "targets": TARGETS,
         "rows": rows},
        indent=2))
    pinned = (f"; servers on CPU {','.join(map(str, pinning['servers']))}, wrk on CPU "
              f"{','.join(map(str, pinning['wrk']))}" if pinning else "")
    others = "; ".join(f"{phase} {v['share']:.0%}" for phase, v in load.items())
    print_table(rows, f"make bench — {gateway['machine']} — {stamp}\n(targets reported, not "
                      f"asserted; part 3: medians of {args.reps} wrk runs of {args.duration:g} s "
                      f"per gateway{pinned})\nCPU used by other processes during the run (share "
                      f"of all CPUs): {others}")
    if any(v["share"] > 0.05 for v in load.values()):
        print("bench: WARNING other processes used the CPUs during the run: the figures are "
              "not those of an idle machine", file=sys.stderr)
    print(f"\nJSON: {args.out_dir / 'summary.json'}, {args.out_dir / 'gateway.json'}"
          + (f", {args.parts12}" if args.parts12 else ""))
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
