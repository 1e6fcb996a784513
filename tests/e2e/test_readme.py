"""README.md works literally: every ```sh block of it is run here as written, on the built tree,
or names the reason it cannot be run on this machine.

Each block is preceded by a marker comment, invisible on the rendered page:
  <!-- readme-test: run; ports: P1 P2 ...; expect: TEXT -->
      The block runs as one bash script from the repository root (so `export` lines carry over),
      with `set -e`. A line ending in `&` starts a server: the script then waits until the next
      port of `ports` accepts connections. `expect` (optional) must appear in the script's output.
  <!-- readme-test: not run: REASON -->
      The block is not run; the reason is printed and must say why (e.g. Kong is not installable
      here). A block without a marker fails the test, so a new README command is never silently
      untested.
PATH gets the repository's own build outputs (target/release, build/venv/bin) as a user who
followed README's "export PATH" line would have them. Every server a block starts is stopped with
its process group when the block ends, and every block is bounded in time.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass

import pytest

from conftest import REPO

README = REPO / "README.md"
MARKER = re.compile(r"<!--\s*readme-test:\s*(.*?)\s*-->", re.S)
BLOCK_TIMEOUT = 600  # seconds for one block (a first `make build` included)

PRELUDE = r"""
set -euo pipefail
__wait_port() {
    for _ in $(seq 1 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "readme-test: nothing listens on 127.0.0.1:$1 after 60 s" >&2
    return 1
}
"""


@dataclass
class Block:
    line: int
    text: str
    marker: str | None


def readme_blocks() -> list[Block]:
    lines = README.read_text().splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```sh":
            start = i
            body = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                body.append(lines[i])
                i += 1
            before = "\n".join(lines[max(0, start - 3):start])
            found = MARKER.findall(before)
            blocks.append(Block(start + 1, "\n".join(body), found[-1] if found else None))
        i += 1
    return blocks


def parse_marker(marker: str) -> dict:
    if marker.startswith("not run:"):
        return {"run": False, "reason": marker[len("not run:"):].strip()}
    parts = [p.strip() for p in marker.split(";")]
    assert parts[0] == "run", f"unknown readme-test marker {marker!r}"
    spec = {"run": True, "ports": [], "expect": None}
    for part in parts[1:]:
        key, _, value = part.partition(":")
        if key.strip() == "ports":
            spec["ports"] = [int(p) for p in value.split()]
        elif key.strip() == "expect":
            spec["expect"] = value.strip()
        else:
            raise AssertionError(f"unknown readme-test option {part!r}")
    return spec


def script_for(block: Block, ports: list[int]) -> str:
    """The block as a bash script: continuation lines joined, a wait for the next port after
    every line that starts a server (`&` at its end, before any comment)."""
    commands, pending = [], ""
    for raw in block.text.splitlines():
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        commands.append(pending + raw)
        pending = ""
    servers = 0
    out = [PRELUDE]
    for command in commands:
        out.append(command)
        code = command.split(" #")[0].rstrip()
        if code.endswith("&"):
            assert servers < len(ports), f"README line {block.line}: a server line without a port in the marker"
            out.append(f"__wait_port {ports[servers]}")
            servers += 1
    assert servers == len(ports), f"README line {block.line}: {len(ports)} ports for {servers} server lines"
    return "\n".join(out) + "\n"


def test_every_readme_block_has_a_marker():
    blocks = readme_blocks()
    assert blocks, "README.md has no sh blocks"
    missing = [b.line for b in blocks if b.marker is None]
    assert not missing, f"README.md sh blocks without a readme-test marker at lines {missing}"
    for block in blocks:
        spec = parse_marker(block.marker)
        if not spec["run"]:
            assert len(spec["reason"]) >= 20, f"README line {block.line}: say why the block is not run"


RUNNABLE = [b for b in readme_blocks() if b.marker and parse_marker(b.marker)["run"]]


def stop_group(proc: subprocess.Popen) -> None:
    """Stops the block's process group (its servers): SIGTERM, up to 10 s to exit, SIGKILL."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"README-line-{b.line}" for b in RUNNABLE])
def test_readme_block_runs_as_written(block, tmp_path):
    spec = parse_marker(block.marker)
    script = tmp_path / "block.sh"
    script.write_text(script_for(block, spec["ports"]))
    env = dict(os.environ)
    env["PATH"] = f"{REPO / 'target' / 'release'}:{REPO / 'build' / 'venv' / 'bin'}:{env['PATH']}"
    log = tmp_path / "block.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["bash", str(script)], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=BLOCK_TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            stop_group(proc)
    output = log.read_text(errors="replace")
    where = f"README.md line {block.line}:\n{block.text}\n--- output ---\n{output[-4000:]}"
    assert code == 0, f"exited with {code}\n{where}"
    if spec["expect"]:
        assert spec["expect"] in output, f"expected {spec['expect']!r} in the output\n{where}"


def test_make_run(tmp_path):
    """README's first command: `make run` builds, then serves the filter (Envoy profile) with an
    embedded REST proxy and prints a produce and a read-back curl line; both work as printed."""
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=REPO, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + BLOCK_TIMEOUT
            lines = {}
            while time.monotonic() < deadline and len(lines) < 2:
                assert proc.poll() is None, f"make run exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                for line in log.read_text(errors="replace").splitlines():
                    for key in ("produce:", "read back:"):
                        if line.strip().startswith(key):
                            lines[key] = line.strip()[len(key):].strip()
                time.sleep(0.2)
            assert len(lines) == 2, f"make run printed no curl lines:\n{log.read_text()[-4000:]}"
            produced = subprocess.run(["bash", "-c", lines["produce:"]], capture_output=True, text=True,
                                      timeout=30)
            assert produced.returncode == 0 and "message sent" in produced.stdout, produced
            read = subprocess.run(["bash", "-c", lines["read back:"]], capture_output=True, text=True,
                                  timeout=30)
            assert read.returncode == 0, read
            assert '"records"' in read.stdout and read.stdout.count('"offset"') >= 1, read.stdout
        finally:
            stop_group(proc)
