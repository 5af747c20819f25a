"""The page in a real browser: headless Chromium (driven by Selenium) loads it, a person's upload
goes through the file input, and the top-1 label and the attention map appear on the page.

With the trained fixture model (tests/fixtures/models/micro-synth) the video is one of the
built-in class "moving left", and that label must come first; with only the random tiny model the
page must show the label the API gives. The screenshot is kept under the test's tmp folder and,
when TUBELET_ARTIFACTS is set, in that folder (docs/images/serve.png is one).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tubelet.inference.pipeline import Pipeline

from .conftest import MICRO_SYNTH, built_in_video, running_server

HOW = ("headless Chromium: apt-get install -y chromium chromium-driver (Debian), and pip install -e '.[test]' "
       "for selenium")


def browser():
    """A headless Chromium through the system's chromedriver (Selenium never downloads one)."""
    webdriver = pytest.importorskip("selenium.webdriver", reason=f"selenium is not installed: {HOW}")
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver_path = shutil.which("chromedriver")
    if not binary or not driver_path:
        pytest.skip(f"no {'chromium' if not binary else 'chromedriver'} on PATH: {HOW}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1100,640", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(arg)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=driver_path), options=options)


def test_a_person_uploads_a_video_and_sees_its_label_and_map(tmp_path, tiny_checkpoint):
    driver = browser()
    try:
        trained = (MICRO_SYNTH / "config.json").is_file()
        model = MICRO_SYNTH if trained else tiny_checkpoint
        video = built_in_video(tmp_path / "moving-left.mp4", label=0, size=64 if trained else 32)
        with running_server(model, "--device", "cpu", tmp=tmp_path) as served:
            from selenium.webdriver.common.by import By
            from selenium.webdriver.support.ui import WebDriverWait

            driver.get(served.url)
            wait = WebDriverWait(driver, 15)
            wait.until(lambda d: "loading" not in d.find_element(By.ID, "model").text)
            explain = driver.find_element(By.ID, "explain")
            assert explain.is_selected() == hasattr(Pipeline, "explain")  # ticked when the server has maps
            driver.find_element(By.ID, "file").send_keys(str(video))
            wait.until(lambda d: d.find_element(By.ID, "result").get_attribute("data-state") in ("done", "error"))
            assert driver.find_element(By.ID, "result").get_attribute("data-state") == "done", \
                driver.find_element(By.ID, "error").text
            top1 = driver.find_elements(By.CSS_SELECTOR, "#top .row .label")[0].text
            expected = "moving left" if trained else served.upload(video.read_bytes())[1]["top"][0]["label"]
            assert top1 == expected
            if hasattr(Pipeline, "explain"):
                frames = driver.find_elements(By.CSS_SELECTOR, "#attention canvas.map-frame")
                assert len(frames) > 0 and driver.find_element(By.ID, "map-section").is_displayed()
                wait.until(lambda d: d.execute_script(
                    "return [...document.querySelectorAll('#attention canvas')].every(c => c.width > 0)"))
            assert driver.find_element(By.ID, "player").get_attribute("src").startswith("blob:")
            shot = tmp_path / "serve.png"
            driver.save_screenshot(str(shot))
            if os.environ.get("TUBELET_ARTIFACTS"):
                out = Path(os.environ["TUBELET_ARTIFACTS"])
                out.mkdir(parents=True, exist_ok=True)
                shutil.copy(shot, out / "serve.png")
    finally:
        driver.quit()
