"""The Dagster web UI (a real dagster-webserver) shows both workflows with their lineage."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from dd_assets_tests.test_cli_e2e import _env

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]

QUERY = """
{ assetNodes { assetKey { path } groupName kinds opVersion dependencyKeys { path } } }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _graphql(port: int, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def running_webserver(target: list[str], env: dict[str, str], cwd: Path, ready_query: str = QUERY):
    """Start ``dagster-webserver`` on a free port and yield the port once it answers ``ready_query``.

    The process is stopped by its id when the block ends.
    """
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), *target, "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _graphql(port, ready_query).get("data"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError("the webserver never answered")
            time.sleep(1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_webserver_lists_both_workflows_with_lineage(tmp_path):
    with running_webserver(["-w", str(REPO / "workspace.yaml")], _env(tmp_path), REPO) as port:
        deadline = time.monotonic() + 120
        nodes = None
        while time.monotonic() < deadline:
            nodes = _graphql(port, QUERY).get("data", {}).get("assetNodes")
            if nodes:
                break
            time.sleep(1)
    assert nodes, "the webserver never served the asset graph"
    by_key = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert {"quickstart/customers", "quickstart/customer_360", "doc_qa/drafts", "doc_qa/chatml"} <= set(by_key)
    joined = by_key["quickstart/customer_360"]
    assert joined["groupName"] == "quickstart"
    assert {"data_designer", "parquet"} <= set(joined["kinds"])
    assert joined["opVersion"]
    assert {"/".join(d["path"]) for d in joined["dependencyKeys"]} == {"quickstart/orders", "quickstart/tickets"}
    assert [d["path"] for d in by_key["doc_qa/chatml"]["dependencyKeys"]] == [["doc_qa", "drafts"]]
