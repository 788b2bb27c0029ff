"""The Dagster web UI as a person uses it: `dagster dev` on a free port, driven by Debian's Chromium via Playwright.

The suite starts ``dagster dev -w workspace.yaml`` with a temporary ``DAGSTER_HOME`` and stops it by process
group. Chromium is the system browser (``/usr/bin/chromium``, installed by ``.ci/run`` with apt when missing);
Playwright never downloads one. Screenshots are saved under the test's temporary directory; with
``DD_ASSETS_UPDATE_SCREENSHOTS=1`` they also replace the ones in ``docs/screenshots/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dagster as dg
import pytest

from dd_assets_tests.conftest import cli_environment
from dd_assets_tests.servers import free_port

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_WORKFLOW = """
name: uitest
stages:
  - name: a
    num_records: 8
    config:
      columns:
        - {name: n, column_type: sampler, sampler_type: uniform, params: {low: 0, high: 9}, convert_to: int}
  - name: b
    depends_on: [a]
    config:
      columns:
        - {name: doubled, column_type: expression, expr: "{{ n * 2 }}"}
  - name: c
    depends_on: [b]
    config:
      columns:
        - {name: label, column_type: expression, expr: "n={{ n }} doubled={{ doubled }}"}
  - name: d
    depends_on: [a]
    config:
      columns:
        - {name: tripled, column_type: expression, expr: "{{ n * 3 }}"}
"""
BROKEN_WORKFLOW = """
name: broken
stages:
  - name: only
    depends_on: [missing_stage]
    config:
      columns:
        - {name: x, column_type: expression, expr: "{{ y }}"}
"""


class DagsterDev:
    """``dagster dev`` on a free port, its own DAGSTER_HOME, and a folder of workflow YAML files it loads."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workflows = root / "workflows"
        self.workflows.mkdir(parents=True)
        (self.workflows / "uitest.yaml").write_text(UI_WORKFLOW)
        self.env = cli_environment(root, DD_ASSETS_WORKFLOWS_DIR=str(self.workflows))
        shutil.copy(REPO / "dd_assets" / "examples" / "dagster.yaml", Path(self.env["DAGSTER_HOME"]) / "dagster.yaml")
        self.log = open(root / "dagster-dev.log", "w")  # noqa: SIM115 - closed in stop()
        command = [str(BIN / "dagster"), "dev", "-w", str(REPO / "workspace.yaml"), "-p", str(self.port)]
        self.proc = subprocess.Popen(
            [*command, "-h", "127.0.0.1"],
            env=self.env,
            cwd=root,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 180
        while not self._location_loaded():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dagster dev did not start: see {root / 'dagster-dev.log'}")
            time.sleep(1)

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())["data"]

    def _location_loaded(self) -> bool:
        try:
            data = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                "locationOrLoadError { __typename } } } } }"
            )
        except OSError:
            return False
        entries = data["workspaceOrError"]["locationEntries"]
        return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])

    def run_count(self) -> int:
        with self.instance() as instance:
            return len(instance.get_runs())

    def wait_for_new_runs(self, before: int, timeout_s: float = 240) -> list[dg.DagsterRun]:
        """The runs launched since there were ``before`` runs, once they have all finished."""
        deadline = time.monotonic() + timeout_s
        with self.instance() as instance:
            while time.monotonic() < deadline:
                runs = instance.get_runs()
                new = runs[: len(runs) - before]
                if new and all(run.is_finished for run in new):
                    return new
                time.sleep(1)
        raise AssertionError(f"runs did not finish: see {self.root / 'dagster-dev.log'}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=30)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory):
    server = DagsterDev(tmp_path_factory.mktemp("ui"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def page(dagster_dev):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail("the browser tests need Debian's Chromium: apt-get install chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(60_000)
        yield page
        browser.close()


def _open(page, url: str) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    skip = page.get_by_role("button", name="Skip")  # Dagster's one-time community dialog
    if skip.count():
        skip.click()


def _screenshot(page, dagster_dev: DagsterDev, name: str, full_page: bool = False) -> Path:
    folder = dagster_dev.root / "screenshots"
    folder.mkdir(exist_ok=True)
    path = folder / name
    page.screenshot(path=str(path), full_page=full_page)
    if os.environ.get("DD_ASSETS_UPDATE_SCREENSHOTS") == "1":
        shutil.copy(path, REPO / "docs" / "screenshots" / name)
    return path


EDGE_PATHS = "svg[class*='AssetGraphExplorer_svgContainer'] path[marker-end]"


def _edges(page) -> int:
    """Edges drawn in the lineage graph (distinct curves: a highlighted edge is drawn twice)."""
    return len(set(page.locator(EDGE_PATHS).evaluate_all("paths => paths.map(p => p.getAttribute('d'))")))


def _node(page, name: str):
    """The box of one asset in the lineage graph."""
    return page.locator("div[class*='AssetNode']", has=page.get_by_text(name, exact=True)).first


def test_the_quickstart_lineage_draws_every_stage_and_edge(dagster_dev, page):
    _open(page, f"{dagster_dev.url}/locations/dd_assets/asset-groups/quickstart")
    for name in ["customers", "orders", "tickets", "customer_360", "export"]:
        page.get_by_text(name, exact=True).first.wait_for()
    page.wait_for_function(f"() => document.querySelectorAll({json.dumps(EDGE_PATHS)}).length >= 5")
    assert _edges(page) == 5  # customers->orders, customers->tickets, orders->360, tickets->360, 360->export
    _screenshot(page, dagster_dev, "quickstart-lineage.png")


def test_materialize_all_from_the_ui_succeeds(dagster_dev, page):
    _open(page, f"{dagster_dev.url}/locations/dd_assets/asset-groups/quickstart")
    before = dagster_dev.run_count()
    page.get_by_role("button", name="Materialize all").click()
    runs = dagster_dev.wait_for_new_runs(before)
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
    _open(page, f"{dagster_dev.url}/locations/dd_assets/asset-groups/quickstart")
    page.wait_for_function("() => (document.body.innerText.match(/Materialized/g) || []).length >= 5")


def test_a_stage_page_shows_rows_columns_with_descriptions_and_a_preview(dagster_dev, page):
    _open(page, f"{dagster_dev.url}/assets/quickstart/customer_360")
    page.get_by_text("Row count").wait_for()
    body = page.inner_text("body")
    assert "Row count\n300" in body
    assert "from stage 'orders': sampler category" in body  # a column's description, from its config
    assert "expression: {{ customer_label }} bought" in body
    assert "large_string" in body and "int64" in body  # the materialized Arrow types
    page.get_by_text("dd_assets/preview").first.scroll_into_view_if_needed()
    _screenshot(page, dagster_dev, "customer_360-asset.png", full_page=True)
    page.get_by_text("[Show Markdown]").first.click()
    page.get_by_text("customer_id").last.wait_for()
    assert "| customer_id |" not in page.inner_text("body")  # rendered as a table, not raw markdown
    page.keyboard.press("Escape")

    # Column lineage is not drawn by the open-source UI (its column-lineage cell is a Dagster+ feature), so read
    # it from the webserver's GraphQL API, the one the UI reads
    data = dagster_dev.graphql(
        "query($path: [String!]!) { assetOrError(assetKey: {path: $path}) { ... on Asset { "
        "assetMaterializations(limit: 1) { metadataEntries { label __typename "
        "... on TableColumnLineageMetadataEntry { lineage { columnName columnDeps { columnName } } } } } } } }",
        {"path": ["quickstart", "customer_360"]},
    )
    entries = data["assetOrError"]["assetMaterializations"][0]["metadataEntries"]
    lineage = next(e for e in entries if e["label"] == "dagster/column_lineage")
    deps = {item["columnName"]: {d["columnName"] for d in item["columnDeps"]} for item in lineage["lineage"]}
    assert {"customer_label", "quantity", "product"} <= deps["profile"]


def test_columns_show_before_the_first_run(dagster_dev, page):
    _open(page, f"{dagster_dev.url}/assets/uitest/c")
    page.get_by_text("Columns").first.wait_for()
    body = page.inner_text("body")
    assert "expression: n={{ n }} doubled={{ doubled }}" in body
    assert "from stage 'b': expression: {{ n * 2 }}" in body
    assert "from stage 'a': sampler uniform" in body


def test_an_edited_stage_and_its_downstream_show_as_changed(dagster_dev, page):
    _open(page, f"{dagster_dev.url}/locations/dd_assets/asset-groups/uitest")
    before = dagster_dev.run_count()
    page.get_by_role("button", name="Materialize all").click()
    runs = dagster_dev.wait_for_new_runs(before)
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]

    path = dagster_dev.workflows / "uitest.yaml"
    path.write_text(UI_WORKFLOW.replace("{{ n * 2 }}", "{{ n * 2 + 1 }}"))
    _open(page, f"{dagster_dev.url}/locations/dd_assets/asset-groups/uitest")
    page.get_by_role("button", name="Reload definitions").click()
    page.wait_for_timeout(3000)
    deadline = time.monotonic() + 120
    while not dagster_dev._location_loaded() and time.monotonic() < deadline:
        time.sleep(1)
    _open(page, f"{dagster_dev.url}/locations/dd_assets/asset-groups/uitest")
    page.get_by_text("Unsynced").first.wait_for()
    _screenshot(page, dagster_dev, "unsynced-after-edit.png")
    assert _unsynced(page) == {"b"}  # its code version changed

    # Dagster marks a downstream asset unsynced once its upstream has a new data version (it does not propagate
    # a code change before that): rematerialize the edited stage from the graph, and exactly its downstream follows
    _node(page, "b").click()
    before = dagster_dev.run_count()
    page.get_by_role("button", name="Materialize selected").click()
    runs = dagster_dev.wait_for_new_runs(before)
    assert [run.status for run in runs] == [dg.DagsterRunStatus.SUCCESS]
    _open(page, f"{dagster_dev.url}/locations/dd_assets/asset-groups/uitest")
    page.get_by_text("Unsynced").first.wait_for()
    assert _unsynced(page) == {"c"}
    _screenshot(page, dagster_dev, "unsynced-downstream.png")


def _unsynced(page) -> set[str]:
    """The stages whose graph node carries Dagster's "Unsynced" label."""
    page.wait_for_timeout(1000)
    return {name for name in ["a", "b", "c", "d"] if "Unsynced" in _node(page, name).inner_text()}


def test_a_broken_workflow_file_shows_its_file_stage_and_field(dagster_dev, page):
    (dagster_dev.workflows / "broken.yaml").write_text(BROKEN_WORKFLOW)
    _open(page, f"{dagster_dev.url}/locations")
    page.get_by_role("button", name="Reload all").first.click() if page.get_by_role(
        "button", name="Reload all"
    ).count() else page.get_by_role("button", name="Reload").first.click()
    page.wait_for_timeout(3000)  # the reload: the location stays loaded, the broken file becomes an asset
    # the broken file is the asset load_errors/broken_yaml, its description the error (docs/yaml.md)
    for _ in range(60):
        _open(page, f"{dagster_dev.url}/assets/load_errors/broken_yaml")
        if page.get_by_text("stage 'only'").count():
            break
        page.wait_for_timeout(2000)
    page.get_by_text("stage 'only'").first.wait_for(timeout=10_000)
    text = page.inner_text("body")
    assert "broken.yaml" in text and "stage 'only'" in text and "field 'depends_on'" in text
    assert "missing_stage" in text
    _screenshot(page, dagster_dev, "broken-workflow-error.png")
    _open(page, f"{dagster_dev.url}/assets/quickstart/customers")  # the other workflows keep loading
    page.get_by_text("quickstart_job").first.wait_for(timeout=30_000)  # its asset page: the workflow is defined
