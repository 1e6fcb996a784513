"""The filter as an OCI image (make oci): pushed to a real registry (Debian's docker-registry, the
CNCF distribution registry, on 127.0.0.1 only) with wasm-oci, read back the way Istio's and Envoy
Gateway's image fetcher reads it, and pulled back byte-identical."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
import requests

from conftest import REPO, WASM
from procs import Proc, free_port

WASM_OCI = REPO / "target" / "release" / "wasm-oci"
LAYOUT = REPO / "target" / "oci" / "kafka-upstream"
REGISTRY = shutil.which("docker-registry")
MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
# Istio pkg/wasm/imagefetcher.go, extractOCIStandardImage: the last layer must have this type
# and be a gzipped tar holding plugin.wasm.
COMPAT_LAYER_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    if REGISTRY is None:
        pytest.fail("docker-registry is not installed: `make registry-tool` installs Debian's package")
    if not (LAYOUT / "index.json").is_file():
        pytest.fail(f"{LAYOUT} does not exist: `make oci` builds it")
    root = tmp_path_factory.mktemp("registry")
    port = free_port()
    config = root / "config.yml"
    # The distribution registry's configuration (docs/configuration.md): filesystem storage in
    # the test's directory, plain HTTP on loopback, no authentication.
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = Proc("docker-registry", [REGISTRY, "serve", config], root / "registry.log")
    try:
        base = f"http://127.0.0.1:{port}"
        proc.wait_until("serving /v2/", lambda: requests.get(f"{base}/v2/", timeout=2).status_code == 200,
                        timeout=30)
        yield f"127.0.0.1:{port}"
    finally:
        proc.stop()


def _wasm_oci(*args: str) -> str:
    result = subprocess.run([str(WASM_OCI), *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"wasm-oci {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout.strip()


def _layout_digest() -> str:
    index = json.loads((LAYOUT / "index.json").read_text())
    return index["manifests"][0]["digest"]


def test_push_then_pull_gives_back_the_same_module(registry, tmp_path):
    reference = f"{registry}/kafka-upstream:e2e"
    pushed = _wasm_oci("push", "--layout", str(LAYOUT), "--plain-http", reference)
    assert pushed == _layout_digest(), "the registry must hold the manifest make oci built"

    out = tmp_path / "pulled.wasm"
    pulled = _wasm_oci("pull", "--plain-http", "--out", str(out), reference)
    assert pulled == pushed
    assert out.read_bytes() == WASM.read_bytes(), "the pulled module differs from kafka_upstream.wasm"


def test_the_registry_serves_the_image_istio_and_envoy_gateway_read(registry):
    """Reads the pushed image over the registry's own HTTP API, independently of wasm-oci, and
    unpacks it as Istio's fetcher does (the last layer, a gzipped tar, the entry plugin.wasm)."""
    reference = f"{registry}/kafka-upstream:fetcher"
    _wasm_oci("push", "--layout", str(LAYOUT), "--plain-http", reference)
    base = f"http://{registry}/v2/kafka-upstream"
    reply = requests.get(f"{base}/manifests/fetcher", headers={"Accept": MANIFEST_TYPE}, timeout=10)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Content-Type"] == MANIFEST_TYPE
    assert reply.headers["Docker-Content-Digest"] == _layout_digest()
    assert "sha256:" + hashlib.sha256(reply.content).hexdigest() == _layout_digest()

    manifest = reply.json()
    assert manifest["schemaVersion"] == 2
    layer = manifest["layers"][-1]
    assert layer["mediaType"] == COMPAT_LAYER_TYPE
    blob = requests.get(f"{base}/blobs/{layer['digest']}", timeout=10)
    assert blob.status_code == 200
    assert "sha256:" + hashlib.sha256(blob.content).hexdigest() == layer["digest"]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob.content))) as archive:
        modules = [m for m in archive.getmembers() if Path(m.name).name == "plugin.wasm"]
        assert len(modules) == 1
        assert archive.extractfile(modules[0]).read() == WASM.read_bytes()

    config = requests.get(f"{base}/blobs/{manifest['config']['digest']}", timeout=10).json()
    assert config["os"] == "wasip1" and config["architecture"] == "wasm"


def test_make_oci_is_reproducible(tmp_path):
    """The same module gives the same digest, so `sha256` in a WasmPlugin or an
    EnvoyExtensionPolicy pins exactly this build."""
    again = tmp_path / "layout"
    digest = _wasm_oci("build", "--wasm", str(WASM), "--out", str(again), "--tag", "x",
                       "--title", "kafka_upstream", "--image-version", _filter_version(),
                       "--licenses", "Apache-2.0")
    assert digest == _layout_digest()


def _filter_version() -> str:
    for line in (REPO / "filter" / "Cargo.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise AssertionError("filter/Cargo.toml has no version line")
