"""The deployment files: envoy.yaml (validated by real Envoy, and its structure checked against
what the filter and the router race need) and kong.yml (Kong 3.x filter_chains rules, the filter
config validated by filter/kafka_upstream.meta.json, and run through host-sim's Kong profile)."""

from __future__ import annotations

import base64
import json
import re
import subprocess

import jsonschema
import pytest
import yaml

import scenarios
from conftest import ENVOY_YAML, HOST_SIM, KONG_YML, META_JSON, REPO, WASM, _envoy_binary

FILTER_NAME = "kafka_upstream"  # Kong: the .wasm file name; Envoy: config.name


def _meta_schema() -> dict:
    return json.loads(META_JSON.read_text())["config_schema"]


def _validator():
    schema = _meta_schema()
    jsonschema.Draft4Validator.check_schema(schema)
    return jsonschema.Draft4Validator(schema)


def _envoy() -> dict:
    return yaml.safe_load(ENVOY_YAML.read_text())


def _hcm(doc: dict) -> dict:
    listeners = doc["static_resources"]["listeners"]
    assert len(listeners) == 1, "envoy.yaml: one listener expected"
    filters = listeners[0]["filter_chains"][0]["filters"]
    assert filters[0]["name"] == "envoy.filters.network.http_connection_manager"
    return filters[0]["typed_config"]


def _envoy_wasm(doc: dict) -> dict:
    wasm = [f for f in _hcm(doc)["http_filters"] if f["name"] == "envoy.filters.http.wasm"]
    assert len(wasm) == 1, "envoy.yaml: exactly one envoy.filters.http.wasm expected"
    return wasm[0]["typed_config"]["config"]


def envoy_filter_config() -> dict:
    configuration = _envoy_wasm(_envoy())["configuration"]
    assert configuration["@type"] == "type.googleapis.com/google.protobuf.StringValue"
    assert isinstance(configuration["value"], str)
    return json.loads(configuration["value"])


def _kong() -> dict:
    return yaml.safe_load(KONG_YML.read_text())


# ---------------------------------------------------------------------------------------------
# filter/kafka_upstream.meta.json

def test_meta_json_is_kong_filter_metadata_with_a_draft4_schema():
    meta = json.loads(META_JSON.read_text())
    assert set(meta) >= {"config_schema"}, "Kong reads the schema from config_schema"
    assert META_JSON.name == f"{FILTER_NAME}.meta.json", "Kong pairs <name>.meta.json with <name>.wasm"
    assert meta["config_schema"].get("$schema") == "http://json-schema.org/draft-04/schema#"
    jsonschema.Draft4Validator.check_schema(meta["config_schema"])


@pytest.mark.parametrize("bad, why", [
    ({"topic": "t"}, "rest_proxy is required"),
    ({"topic": "t", "rest_proxy": {"upstream": "u"}, "unknown": 1}, "unknown keys are rejected"),
    ({"topic": "t", "rest_proxy": {"upstream": "u"}, "forward_body": False},
     "at least one forward_* flag must be true"),
    ({"topic": "t", "rest_proxy": {"upstream": "u", "api": "v4"}}, "api is v2 or v3"),
    ({"topic": "t", "rest_proxy": {"upstream": "u"}, "max_body_size": "1"}, "types are checked"),
])
def test_meta_json_rejects_invalid_configs(bad, why):
    assert not _validator().is_valid(bad), f"the schema accepts a config it must reject: {why}"


# ---------------------------------------------------------------------------------------------
# envoy.yaml

def test_envoy_yaml_is_accepted_by_real_envoy(tmp_path):
    """`envoy --mode validate` on the committed file, from the repository root (where its
    relative .wasm path points)."""
    assert WASM.is_file(), f"{WASM} missing: run `make wasm`"
    done = subprocess.run(
        [str(_envoy_binary()), "--mode", "validate", "-c", str(ENVOY_YAML),
         "--use-dynamic-base-id", "--base-id-path", str(tmp_path / "base-id"),
         "--log-level", "warning"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"envoy --mode validate failed:\n{done.stdout}\n{done.stderr}"
    assert "OK" in done.stdout + done.stderr


def test_envoy_yaml_wasm_filter():
    wasm = _envoy_wasm(_envoy())
    vm = wasm["vm_config"]
    assert vm["runtime"] == "envoy.wasm.runtime.v8"
    filename = vm["code"]["local"]["filename"]
    # Relative to the repository root, which is both Envoy's working directory in the README's
    # command and the directory of envoy.yaml (where host-sim serve resolves it).
    assert not filename.startswith("/"), "the .wasm path must be relative to the repository"
    assert (ENVOY_YAML.parent / filename).resolve() == WASM.resolve()
    assert wasm.get("fail_open", False) is False, "a broken filter must not let requests through"


def test_envoy_yaml_filter_config_is_valid():
    config = envoy_filter_config()
    errors = sorted(_validator().iter_errors(config), key=str)
    assert not errors, "envoy.yaml configuration: " + "; ".join(e.message for e in errors)


def test_envoy_yaml_upstream_is_a_static_cluster_on_loopback():
    doc = _envoy()
    upstream = envoy_filter_config()["rest_proxy"]["upstream"]
    clusters = {c["name"]: c for c in doc["static_resources"]["clusters"]}
    assert upstream in clusters, f"rest_proxy.upstream {upstream!r} is not a cluster"
    cluster = clusters[upstream]
    assert cluster["type"] == "STATIC"
    addresses = [e["endpoint"]["address"]["socket_address"]
                 for ep in cluster["load_assignment"]["endpoints"] for e in ep["lb_endpoints"]]
    assert addresses and all(a["address"] == "127.0.0.1" for a in addresses)


def test_envoy_yaml_listens_on_loopback_high_ports():
    doc = _envoy()
    for where, sa in [("admin", doc["admin"]["address"]["socket_address"]),
                      ("listener", doc["static_resources"]["listeners"][0]["address"]
                       ["socket_address"])]:
        assert sa["address"] == "127.0.0.1", f"{where} must listen on loopback"
        assert sa["port_value"] >= 1024, f"{where} must use a high port"


def test_envoy_yaml_filter_reply_always_wins_the_router_race():
    """wasm, then buffer, then router; the route is a direct_response (a tripwire); the buffer
    filter accepts any body the wasm filter accepts, so the filter's own 413 answers."""
    hcm = _hcm(_envoy())
    names = [f["name"] for f in hcm["http_filters"]]
    assert names == ["envoy.filters.http.wasm", "envoy.filters.http.buffer",
                     "envoy.filters.http.router"], names
    buffer = hcm["http_filters"][1]["typed_config"]
    assert buffer["@type"] == "type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer"
    assert int(buffer["max_request_bytes"]) > envoy_filter_config()["max_body_size"]
    routes = [r for vh in hcm["route_config"]["virtual_hosts"] for r in vh["routes"]]
    assert routes and all("direct_response" in r and "route" not in r for r in routes)


def test_envoy_yaml_config_is_what_the_e2e_scenarios_assume():
    config = envoy_filter_config()
    assert config["topic"] == scenarios.TOPIC
    assert config["max_body_size"] == scenarios.MAX_BODY
    assert config["rest_proxy"]["timeout"] == scenarios.REST_TIMEOUT_S * 1000
    assert config["topics_query_arg"] == "topics" and config["key_query_arg"] == "key"
    assert sorted(config["allowed_topics"]) == ["audit", "orders"]
    assert all(config[f"forward_{f}"] for f in ("method", "uri", "headers", "body"))


# ---------------------------------------------------------------------------------------------
# kong.yml (rules of Kong 3.9's filter_chains and wasm_filter schemas)

UTF8_NAME = re.compile(r"^[\w.\-~\u0080-\U0010ffff]+$")  # Kong's typedefs.utf8_name


def _kong_chains() -> list[tuple[dict, str]]:
    """Every filter chain with what it is attached to: nested under a route or service, or at
    the top level with a `route` or `service` reference."""
    doc = _kong()
    chains = []
    for route in doc.get("routes") or []:
        chains += [(c, f"route {route.get('name')}") for c in route.get("filter_chains") or []]
    for service in doc.get("services") or []:
        chains += [(c, f"service {service.get('name')}") for c in service.get("filter_chains") or []]
        for route in service.get("routes") or []:
            chains += [(c, f"route {route.get('name')}") for c in route.get("filter_chains") or []]
    for chain in doc.get("filter_chains") or []:
        has = [k for k in ("route", "service") if chain.get(k)]
        assert len(has) == 1, f"filter chain {chain.get('name')}: needs exactly one of route, service"
        chains.append((chain, f"{has[0]} {chain[has[0]]}"))
    return chains


def test_kong_yml_format_and_route_without_service():
    doc = _kong()
    assert doc["_format_version"] == "3.0"
    routes = doc.get("routes") or []
    assert routes, "kong.yml: a top-level route expected"
    for route in routes:
        assert "service" not in route, "the route has no service: the filter answers itself"
        assert UTF8_NAME.match(route["name"])
        assert route.get("paths"), "a Kong http route needs paths (or hosts/methods/headers)"
        assert all(p.startswith("/") for p in route["paths"])


def test_kong_yml_filter_chains_follow_kongs_rules():
    chains = _kong_chains()
    assert chains, "kong.yml: no filter chain"
    for chain, owner in chains:
        where = f"filter chain {chain.get('name')} ({owner})"
        assert set(chain) <= {"name", "enabled", "route", "service", "filters", "tags"}, where
        if "name" in chain:
            assert isinstance(chain["name"], str) and UTF8_NAME.match(chain["name"]), where
        assert isinstance(chain.get("enabled", True), bool), where
        filters = chain["filters"]
        assert isinstance(filters, list) and len(filters) >= 1, f"{where}: filters len_min 1"
        for f in filters:
            assert set(f) <= {"name", "enabled", "config"}, f"{where}: {sorted(f)}"
            assert isinstance(f["name"], str), where
            assert isinstance(f.get("enabled", True), bool), where


def test_kong_yml_filter_is_the_built_module_and_its_config_is_valid():
    validator = _validator()
    seen = 0
    for chain, owner in _kong_chains():
        for f in chain["filters"]:
            # Kong's filter name = the .wasm file name in wasm_filters_path (no extension); the
            # .meta.json beside it makes Kong validate `config` as an object.
            assert f["name"] == FILTER_NAME, f"{owner}: unknown filter {f['name']!r}"
            assert WASM.name == f"{f['name']}.wasm"
            assert isinstance(f.get("config"), dict), f"{owner}: config must be an object"
            errors = sorted(validator.iter_errors(f["config"]), key=str)
            assert not errors, f"{owner}: " + "; ".join(e.message for e in errors)
            # Kong dispatches to host:port, not to a cluster name.
            assert re.fullmatch(r"[^:/\s]+:\d+", f["config"]["rest_proxy"]["upstream"])
            seen += 1
    assert seen >= 1


def test_kong_yml_and_envoy_yaml_configure_the_same_filter():
    """The two deployments differ only in how the REST proxy is reached."""
    (chain, _), = _kong_chains()
    kong = json.loads(json.dumps(chain["filters"][0]["config"]))
    envoy = envoy_filter_config()
    kong["rest_proxy"].pop("upstream")
    envoy["rest_proxy"].pop("upstream")
    assert kong == envoy


def test_kong_yml_through_host_sim_kong_profile(tmp_path):
    """kong.yml's filter config, JSON-encoded as Kong (>= 3.5, with the .meta.json) passes it,
    runs through host-sim's Kong profile: configure succeeds, the call goes to the configured
    host:port, and an acknowledged record gives 200 message sent."""
    (chain, _), = _kong_chains()
    config = chain["filters"][0]["config"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "request.json").write_text(json.dumps({
        "headers": [[":method", "POST"], [":path", "/kafka/orders?source=web"],
                    [":authority", "gateway.e2e"], [":scheme", "http"],
                    ["content-type", "application/json"], ["content-length", "9"]],
        "body": '{"id":42}'}))
    (tmp_path / "response.json").write_text(json.dumps({
        "status": 200, "headers": [["content-type", "application/vnd.kafka.v2+json"]],
        "body": json.dumps({"offsets": [{"partition": 0, "offset": 0, "error_code": None,
                                         "error": None}],
                            "key_schema_id": None, "value_schema_id": None})}))
    assert HOST_SIM.is_file(), f"{HOST_SIM} missing: run `make host-sim`"
    done = subprocess.run(
        [str(HOST_SIM), "run", "--profile", "kong", "--filter", str(WASM),
         "--config", str(tmp_path / "config.json"), "--request", str(tmp_path / "request.json"),
         "--http-call-response", str(tmp_path / "response.json")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"host-sim run: {done.returncode}\n{done.stderr}"
    t = json.loads(done.stdout)
    assert t["configure_ok"] is True, t["logs"]
    assert t["trap"] is None, t["trap"]
    (call,) = t["http_calls"]
    assert call["upstream"] == config["rest_proxy"]["upstream"]
    assert dict(call["headers"])[":path"] == f"/topics/{config['topic']}"
    assert call["timeout_ms"] == config["rest_proxy"]["timeout"]
    assert t["local_response"]["status"] == 200
    assert t["local_response"]["body"] == scenarios.SENT.decode()
    (record,) = json.loads(call["body"])["records"]
    message = json.loads(base64.b64decode(record["value"]))
    assert message["method"] == "POST" and message["uri"] == "/kafka/orders?source=web"
    assert message["body_args"] == {"id": 42} and message["headers"]["host"] == "gateway.e2e"


# ---------------------------------------------------------------------------------------------
# deploy/: Istio WasmPlugin, Envoy Gateway EnvoyExtensionPolicy, Kong Admin API filter chain

DEPLOY = REPO / "deploy"


def _yaml(path) -> dict:
    return yaml.safe_load(path.read_text())


def _assert_valid_config(config, where: str) -> None:
    assert isinstance(config, dict), f"{where}: the filter configuration must be an object"
    errors = sorted(_validator().iter_errors(config), key=str)
    assert not errors, f"{where}: " + "; ".join(e.message for e in errors)


def _run_config_through_host_sim(config: dict, profile: str, tmp_path) -> None:
    """The configuration as the control plane hands it over (JSON text), through host-sim's
    profile of that host: on_configure must accept it."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "request.json").write_text(json.dumps({
        "headers": [[":method", "GET"], [":path", "/"], [":authority", "gw"], [":scheme", "http"]]}))
    done = subprocess.run(
        [str(HOST_SIM), "run", "--profile", profile, "--filter", str(WASM),
         "--config", str(tmp_path / "config.json"), "--request", str(tmp_path / "request.json")],
        capture_output=True, text=True, timeout=120)
    transcript = json.loads(done.stdout)
    assert transcript["configure_ok"] is True, transcript["logs"]


def test_istio_wasmplugin(tmp_path):
    doc = _yaml(DEPLOY / "istio" / "wasmplugin.yaml")
    assert doc["apiVersion"] == "extensions.istio.io/v1alpha1" and doc["kind"] == "WasmPlugin"
    spec = doc["spec"]
    # An OCI image (oci:// scheme, WasmPlugin.url), failing closed, on a dedicated workload.
    assert spec["url"].startswith("oci://")
    assert spec.get("failStrategy", "FAIL_CLOSE") == "FAIL_CLOSE"
    assert spec["selector"]["matchLabels"], "the plugin must select a dedicated gateway"
    config = spec["pluginConfig"]
    _assert_valid_config(config, "deploy/istio/wasmplugin.yaml pluginConfig")
    # Istio names a Kubernetes service's cluster outbound|<port>||<fqdn>.
    assert re.fullmatch(r"outbound\|\d+\|\|[a-z0-9.\-]+", config["rest_proxy"]["upstream"])
    _run_config_through_host_sim(config, "envoy", tmp_path)


def test_envoy_gateway_extension_policy(tmp_path):
    doc = _yaml(DEPLOY / "envoy-gateway" / "extension-policy.yaml")
    assert doc["apiVersion"] == "gateway.envoyproxy.io/v1alpha1"
    assert doc["kind"] == "EnvoyExtensionPolicy"
    spec = doc["spec"]
    assert spec["targetRefs"] and all(t["kind"] in ("HTTPRoute", "Gateway") for t in spec["targetRefs"])
    (wasm,) = spec["wasm"]
    assert wasm["code"]["type"] == "Image" and wasm["code"]["image"]["url"]
    assert wasm.get("failOpen", False) is False
    _assert_valid_config(wasm["config"], "deploy/envoy-gateway/extension-policy.yaml config")
    _run_config_through_host_sim(wasm["config"], "envoy", tmp_path)


def test_kong_admin_api_filter_chain(tmp_path):
    chain = json.loads((DEPLOY / "kong" / "filter-chain.json").read_text())
    assert set(chain) <= {"name", "enabled", "route", "service", "filters", "tags"}
    (f,) = chain["filters"]
    assert f["name"] == FILTER_NAME
    _assert_valid_config(f["config"], "deploy/kong/filter-chain.json")
    assert re.fullmatch(r"[^:/\s]+:\d+", f["config"]["rest_proxy"]["upstream"])
    _run_config_through_host_sim(f["config"], "kong", tmp_path)
    # Apart from where the REST proxy is, the same configuration as kong.yml.
    (kong_chain, _), = _kong_chains()
    ours = json.loads(json.dumps(f["config"]))
    theirs = json.loads(json.dumps(kong_chain["filters"][0]["config"]))
    for c in (ours, theirs):
        c["rest_proxy"].pop("upstream")
        c["rest_proxy"].pop("authority")
    assert ours == theirs
