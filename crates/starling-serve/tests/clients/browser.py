"""Drives the page of `starling serve` in headless Chromium (Debian's chromium + chromedriver):
types a search, checks the timeline, switches the order, asks the chat panel and waits for the
streamed answer and its grounding posts, then saves a screenshot.

usage: browser.py PAGE_URL SCREENSHOT.png   (exit 77 when selenium or chromium is missing)
"""
import shutil
import sys

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:
    print(f"selenium is not installed: {e}")
    sys.exit(77)

url, shot = sys.argv[1], sys.argv[2]
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
driver_bin = shutil.which("chromedriver")
if not chromium or not driver_bin:
    print("chromium or chromedriver not found (Debian: apt-get install chromium chromium-driver)")
    sys.exit(77)

opts = webdriver.ChromeOptions()
opts.binary_location = chromium
for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"):
    opts.add_argument(a)
driver = webdriver.Chrome(service=Service(driver_bin), options=opts)
try:
    wait = WebDriverWait(driver, 30)
    driver.get(url)
    wait.until(lambda d: "model:" in d.find_element(By.ID, "model").text)
    box = driver.find_element(By.ID, "q")
    box.send_keys("#nba -lakers")
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .post")) > 0)
    posts = driver.find_elements(By.CSS_SELECTOR, "#results .post")
    texts = [p.find_element(By.CSS_SELECTOR, ".text").text for p in posts]
    assert all("#nba" in t and "lakers" not in t for t in texts), texts
    assert posts[0].find_elements(By.CSS_SELECTOR, "a.entity"), "hashtags are not linked"
    assert "posts" in driver.find_element(By.ID, "results-status").text
    driver.find_element(By.ID, "order-latest").click()
    wait.until(lambda d: "on" in d.find_element(By.ID, "order-latest").get_attribute("class"))
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#results .post")) > 0)

    say = driver.find_element(By.ID, "say")
    say.send_keys("what happened in the #nba finals?")
    say.send_keys(Keys.ENTER)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".msg.assistant.done"))
    answer = driver.find_element(By.CSS_SELECTOR, ".msg.assistant.done")
    assert "error" not in answer.get_attribute("class"), answer.text
    grounding = driver.find_elements(By.CSS_SELECTOR, ".grounding .post")
    assert grounding and all("#nba" in g.text for g in grounding), [g.text for g in grounding]
    driver.save_screenshot(shot)
    print(f"browser: {len(posts)} results, answer {answer.text!r}, grounded on {len(grounding)} posts; screenshot {shot}")
finally:
    driver.quit()
