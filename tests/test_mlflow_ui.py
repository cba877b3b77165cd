"""The MLflow UI on a sweep's store, as the README tells a user to open it: `mlflow server` on 127.0.0.1, checked
through its REST API and in Debian's headless chromium (selenium)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator

import pytest

from tests.helpers import free_port, run_cli, tiny_data_args, wait_until_up

pytestmark = pytest.mark.slow
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
MODEL = "emotions"


def api(url: str, endpoint: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/{endpoint}", data, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_bert) -> Iterator[str]:
    """A 2-job sweep (loss=bce,asymmetric) through the CLI, each job registering its model as a version of MODEL, then
    `mlflow server` on its store; yields the URL."""
    tmp = tmp_path_factory.mktemp("mlflow-ui")
    args = tiny_data_args(tmp, tiny_bert, multilabel=True)
    run_cli(tmp, "--multirun", "loss=bce,asymmetric", "trainer.max_epochs=1", *args, "hydra.sweep.dir=sweep",
            "export.mlflow=true", f"export.registered_model_name={MODEL}")
    url = f"http://127.0.0.1:{(port := free_port())}"
    log = (tmp / "server.log").open("w")
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job runner: 8 fewer processes
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp}/outputs/mlflow.db",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        wait_until_up(f"{url}/health", process, tmp / "server.log", seconds=60)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def sweep_runs(url: str) -> tuple[str, dict, list[dict]]:
    """The experiment id, the sweep's parent run and its children, through the REST API."""
    experiment = api(url, "experiments/get-by-name?experiment_name=labelwise")["experiment"]
    runs = api(url, "runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    for run in runs:
        run["tags"] = {tag["key"]: tag["value"] for tag in run["data"].get("tags", [])}
        run["metrics"] = {metric["key"]: metric["value"] for metric in run["data"].get("metrics", [])}
    (parent,) = [run for run in runs if run["tags"].get("labelwise.kind") == "sweep"]
    children = [run for run in runs if run["tags"].get("mlflow.parentRunId") == parent["info"]["run_id"]]
    return experiment["experiment_id"], parent, children


def test_rest_api_lists_the_sweep_parent_and_its_children_with_metrics(server):
    experiment_id, parent, children = sweep_runs(server)

    assert parent["info"]["run_name"].startswith("loss=bce,asymmetric (")
    assert parent["info"]["status"] == "FINISHED" and parent["tags"]["labelwise.jobs"] == "2"
    assert sorted(run["info"]["run_name"] for run in children) == ["loss=asymmetric", "loss=bce"]
    for run in children:
        assert run["info"]["status"] == "FINISHED" and run["info"]["experiment_id"] == experiment_id
        assert 0 <= run["metrics"]["val/macro_f1"] <= 1 and "test/macro_f1" in run["metrics"]
        assert len(run["tags"]["labelwise.data_fingerprint"]) == 16
        fetched = api(server, f"runs/get?run_id={run['info']['run_id']}")["run"]
        assert {m["key"] for m in fetched["data"]["metrics"]} >= {"val/macro_f1", "test/macro_f1"}
    artifacts = api(server, f"artifacts/list?run_id={children[0]['info']['run_id']}")["files"]
    assert {"config", "report"} <= {a["path"] for a in artifacts if a["is_dir"]}


def test_each_job_registered_its_model_from_its_own_run(server):
    _, _, children = sweep_runs(server)
    versions = api(server, f"model-versions/search?filter=name%3D%27{MODEL}%27")["model_versions"]
    assert sorted(v["version"] for v in versions) == ["1", "2"]
    assert sorted(v["run_id"] for v in versions) == sorted(run["info"]["run_id"] for run in children)
    assert all(v["status"] == "READY" for v in versions)


def browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return 'selenium is not installed (pip install -e ".[dev]")'
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is missing (Debian: apt-get install chromium chromium-driver, as .ci/run does)"
    return None


@pytest.mark.skipif(browser_missing() is not None, reason=f"no headless browser: {browser_missing()}")
def test_ui_shows_the_experiment_and_a_child_run_in_headless_chromium(server, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    experiment_id, parent, children = sweep_runs(server)
    (child,) = [run for run in children if run["info"]["run_name"] == "loss=asymmetric"]
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1600,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))

    def page_shows(*texts: str) -> None:
        try:
            WebDriverWait(driver, 60).until(lambda d: all(t in d.find_element(By.TAG_NAME, "body").text for t in texts))
        except Exception as error:
            driver.save_screenshot(str(shot := tmp_path / "mlflow-ui.png"))
            body = driver.find_element(By.TAG_NAME, "body").text
            raise AssertionError(f"{driver.current_url} never showed {texts} (screenshot {shot}):\n{body}") from error

    try:  # the runs table of the "Model training" view (the UI opens experiments in its GenAI view)
        driver.get(f"{server}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
        page_shows("labelwise", parent["info"]["run_name"], "3 matching runs")
        parent_link = driver.find_element(By.LINK_TEXT, parent["info"]["run_name"])
        parent_link.find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]//button").click()  # expand children
        page_shows("loss=asymmetric")
        driver.find_element(By.LINK_TEXT, "loss=asymmetric").click()
        WebDriverWait(driver, 60).until(lambda d: f"/runs/{child['info']['run_id']}" in d.current_url)
        page_shows("loss=asymmetric", "Metrics", "val/macro_f1", "Parameters")  # the child's run page
        driver.find_element(By.XPATH, "//*[@role='tab' and normalize-space()='Artifacts']").click()
        page_shows("config", "report")
        driver.get(f"{server}/#/models/{MODEL}")  # the registry: the model and the version each job registered
        page_shows(MODEL, "Version 1", "Version 2")
    finally:
        driver.quit()
