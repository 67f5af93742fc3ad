"""A real headless Chromium talks to `launch.serve` (a subprocess over the exported tiny artifact).

The page gets a corpus WAV as its microphone and Chromium's fake camera, streams for >= 5 s, plays
the model's audio and shows its latency; the test writes a screenshot PNG, then SIGTERMs the server
and checks that the page was told and the server exited cleanly. Needs Debian's `chromium` and
`chromium-driver` (`.ci/run` installs them and sets WAN_REQUIRE_BROWSER=1, so CI never skips it).
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from data_pipelines.media_io import write_wav
from tests.helpers import ROOT
from tests.serving_helpers import artifact, recording  # noqa: F401

CHROMIUM, CHROMEDRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"
MIN_UNITS = 32  # > 5 s of the model's audio played


def _need_browser():
  missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(p)]
  if missing:
    if os.environ.get("WAN_REQUIRE_BROWSER"):
      pytest.fail(f"{missing} not installed (apt-get install -y chromium chromium-driver)")
    pytest.skip(f"{missing} not installed (apt-get install -y chromium chromium-driver)")


def _get_json(url: str):
  with urllib.request.urlopen(url, timeout=5) as r:
    return json.loads(r.read())


def _wait_healthy(base: str, proc, log_path: str, timeout: float = 240.0) -> None:
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      raise AssertionError(f"launch.serve exited with {proc.returncode}:\n{open(log_path).read()[-3000:]}")
    try:
      if _get_json(base + "/healthz")["ok"]:
        return
    except OSError:
      pass
    time.sleep(0.25)
  raise AssertionError(f"launch.serve not healthy after {timeout} s:\n{open(log_path).read()[-3000:]}")


def test_browser_talks_to_the_server(artifact, tmp_path):  # noqa: F811
  _need_browser()
  import portpicker
  from selenium import webdriver
  from selenium.webdriver.chrome.service import Service
  from selenium.webdriver.common.by import By

  wav = str(tmp_path / "user.wav")
  write_wav(wav, recording(0, 60).audio, 16000)  # a held-out corpus conversation as the microphone
  port = portpicker.pick_unused_port()
  base = f"http://127.0.0.1:{port}"
  log_path = str(tmp_path / "serve.log")
  with open(log_path, "w") as log:
    proc = subprocess.Popen([sys.executable, "-m", "launch.serve", f"--artifact={artifact}", f"--port={port}",
                             "--sessions=2"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
  driver = None
  try:
    _wait_healthy(base, proc, log_path)
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                f"--use-file-for-fake-audio-capture={wav}", "--autoplay-policy=no-user-gesture-required",
                "--window-size=1300,760"):
      opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.get(base + "/")
    driver.find_element(By.ID, "start").click()
    read = lambda: {k: driver.find_element(By.ID, k).text for k in (  # noqa: E731
        "status", "units-sent", "units-played", "latency-p50", "latency-p95", "recv-rms", "play-rms", "mic-rms", "realigned",
        "errors")}
    deadline = time.monotonic() + 60
    page, toggled = read(), False
    while int(page["units-played"] or 0) < MIN_UNITS and time.monotonic() < deadline:
      time.sleep(0.5)
      page = read()
      if not toggled and int(page["units-played"] or 0) >= MIN_UNITS // 2:  # camera off, and type something
        driver.find_element(By.ID, "camera-toggle").click()
        driver.find_element(By.ID, "typed").send_keys("what is two plus two\n")
        toggled = True
    console = [e["message"] for e in driver.get_log("browser")]
    stats = _get_json(base + "/stats")
    png = str(tmp_path / "talk_page.png")
    assert driver.save_screenshot(png)
    print("screenshot:", png, "page:", page, "session:", stats["per_session"])

    assert int(page["units-played"]) >= MIN_UNITS, (page, console)
    p50, p95 = float(page["latency-p50"]), float(page["latency-p95"])
    assert 0 < p50 <= p95 < 2000, page
    played, received = float(page["play-rms"]), float(page["recv-rms"])
    assert received > 0 and 0.5 < played / received < 2, page  # the model's voice was played, not silence
    assert page["errors"] == "", page
    (sess,) = stats["per_session"]
    assert sess["units_in"] >= MIN_UNITS and sess["errors"] == 0, sess  # 160 ms units at the model's rate
    assert 0 < sess["camera_units"] < sess["units_in"] - 2, sess  # frames, then none after the toggle
    assert sess["text_tokens"] == len("what is two plus two".split()) + len("whatistwoplustwo") + 1, sess
    mic = recording(0, 60).audio[:sess["units_in"] * 2560]
    wav_rms = float(np.sqrt(np.mean(mic ** 2)))
    assert 0.3 < sess["input_rms"] / wav_rms < 3, (sess, wav_rms)  # the WAV microphone came through the worklet
    with open(png, "rb") as f:
      head = f.read(8)
    assert head == b"\x89PNG\r\n\x1a\n" and os.path.getsize(png) > 10_000

    proc.send_signal(signal.SIGTERM)  # clean shutdown: the page is told, the process exits 0
    assert proc.wait(timeout=30) == 0, open(log_path).read()[-3000:]
    deadline = time.monotonic() + 10
    while "1001" not in read()["status"] and time.monotonic() < deadline:
      time.sleep(0.2)
    assert "closed (1001" in read()["status"], read()
  finally:
    if driver is not None:
      driver.quit()
    if proc.poll() is None:
      proc.kill()
      proc.wait(10)
  assert np.isfinite(p50)
