"""Drive the running app in headless Chromium and save screenshots (development aid).

Usage: python scripts/screenshot.py URL OUT_DIR [SAMPLE]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1500,1900"):  # fmt: skip
        options.add_argument(flag)
    return webdriver.Chrome(service=webdriver.ChromeService("/usr/bin/chromedriver"), options=options)


def main(url: str, out: Path, sample: str = "mni152_axial.png") -> None:
    out.mkdir(parents=True, exist_ok=True)
    driver = browser()
    try:
        driver.get(url)
        wait = WebDriverWait(driver, 90)
        wait.until(EC.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Use a sample')]"))).click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "[data-testid='stImage']")) >= 3)
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".js-plotly-plot"))
        time.sleep(2)
        driver.save_screenshot(str(out / "explain.png"))
    finally:
        driver.quit()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
