"""src.demo as a colleague uses it: the Gradio app served on 127.0.0.1 by the CLI, driven in headless Chromium."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from src.inference import Predictor
from src.train import train
from tests.helpers import ROOT, compose_train, free_port, quick, wait_until_up, write_dataset
from tests.test_mlflow_ui import CHROMEDRIVER, CHROMIUM, browser_missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(browser_missing() is not None, reason=f"no headless browser: {browser_missing()}"),
    pytest.mark.skipif(not __import__("importlib.util").util.find_spec("gradio"), reason="gradio not installed"),
]
TEXT = "so rude and unfair, he kept yelling"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_bert) -> Path:
    root = tmp_path_factory.mktemp("demo")
    summary = train(compose_train(root, quick(tiny_bert, write_dataset(root, multilabel=True), "trainer.max_epochs=1",
                                              "logger=none", "test=false")))
    return Path(summary["best_checkpoint"])


def test_demo_labels_a_typed_text_and_thresholds_move_the_decision(ckpt, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    model = Predictor.from_checkpoint(ckpt)
    (expected,) = model.predict([TEXT])
    assert expected["labels"]  # so that moving the thresholds below changes the decision
    port = free_port()
    log = tmp_path / "demo.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "src.demo", f"ckpt_path={ckpt}", f"port={port}"], cwd=tmp_path, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)})
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1800"):
        options.add_argument(flag)
    driver = None
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, process, log)
        driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
        wait = WebDriverWait(driver, 60)
        driver.get(url)
        box = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "textarea"))
        page = driver.find_element(By.TAG_NAME, "body")
        # the text box renders before the panels below it ("Loading..." until then): wait, don't read once
        wait.until(lambda d: "Examples from the validation split" in page.text and "Decision thresholds" in page.text)
        box.send_keys(TEXT)
        driver.find_element(By.XPATH, "//button[normalize-space()='Label it']").click()
        decision = f"Decision: {', '.join(expected['labels']) or 'no label'}"
        wait.until(lambda d: decision in d.find_element(By.ID, "decision").text)
        top = max(expected["scores"], key=expected["scores"].get)
        # every label's bar, with its score as a percentage (the bars may render after the decision line)
        wait.until(lambda d: all(name in page.text for name in model.labels.names)
                   and f"{round(100 * expected['scores'][top])}%" in page.text)
        driver.save_screenshot(str(tmp_path / "demo.png"))

        # every threshold to 1 and the at-least-one rule off: nothing passes
        for slider in driver.find_elements(By.CSS_SELECTOR, "input[type=number]"):
            slider.clear()
            slider.send_keys("1", "\n")
        checkbox = driver.find_element(By.CSS_SELECTOR, "input[type=checkbox]")
        if checkbox.is_selected():
            checkbox.click()
        wait.until(lambda d: "Decision: no label" in d.find_element(By.ID, "decision").text)
    except Exception:
        if driver is not None:
            driver.save_screenshot(str(tmp_path / "demo-failure.png"))
        raise
    finally:
        if driver is not None:
            driver.quit()
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
    assert (tmp_path / "demo.png").stat().st_size > 0
