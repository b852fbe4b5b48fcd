"""The report opened in a real headless Chromium, as a product person opens the file: it renders, has every
section, every plot has loaded, and the page logs no error. Written from small constructed data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from browser_testing import PHONE, open_page, shot
from playwright.async_api import expect
from workbench_testing import HANDOFF, TUNING, Evaluation, champions_vs_global, with_champions

from copilot.report.report import SECTIONS, knobs_table, write_report

pytestmark = pytest.mark.browser

IMAGES = """() => [...document.images].map(
    (img) => ({alt: img.alt, complete: img.complete, width: img.naturalWidth}))"""


async def test_the_report_renders_with_its_sections_and_plots(
        browser: Any, evaluation: Evaluation, tmp_path: Path, screenshots: Path) -> None:
    path = write_report(tmp_path / "reports", summary=evaluation.summary, predictions=with_champions(evaluation.frame),
                        handoff=HANDOFF, replay_turns=evaluation.frame, champions_vs_global=champions_vs_global(),
                        knobs=knobs_table(TUNING), title="Copilot report (test data)")
    opened = await open_page(browser, path.as_uri())
    page = opened.page
    await expect(page).to_have_title("Copilot report (test data)")
    await expect(page.locator("h1")).to_have_text("Copilot report (test data)")
    assert await page.locator("section > h2").all_inner_texts() == list(SECTIONS.values())
    await expect(page.locator("#leaderboard h3").first).to_have_text("All chatbots")
    await expect(page.locator("#leaderboard table")).to_have_count(4)  # all chatbots, best of each, bank, weather
    await expect(page.locator("#champions tbody tr")).to_have_count(2)
    await expect(page.locator("#handoff")).to_contain_text("first agent reply")
    await expect(page.locator("#knobs tbody tr")).to_have_count(1)  # the chatbot that kept a knob
    await expect(page.locator("#knobs details li")).to_have_count(1)  # the other, folded with its reason
    await expect(page.locator("#knobs")).to_contain_text("1 of 2 chatbots kept a knob")

    await page.wait_for_load_state("load")
    images = await page.evaluate(IMAGES)
    assert len(images) == 9  # leaderboard: all chatbots and each one; ranks; champions; knobs; 2 latency; handoff
    assert all(image["complete"] and image["width"] > 0 for image in images), images
    assert all(image["alt"] for image in images)
    await shot(opened, screenshots, "report")
    opened.assert_no_errors()
    await opened.context.close()


async def test_a_report_without_replay_or_tuning_still_renders_on_a_phone(
        browser: Any, evaluation: Evaluation, tmp_path: Path, screenshots: Path) -> None:
    path = write_report(tmp_path, summary=evaluation.summary)
    opened = await open_page(browser, path.as_uri(), viewport=PHONE)
    page = opened.page
    await expect(page.locator("#handoff .note")).to_contain_text("pass --handoff FILE")
    await expect(page.locator("#champions .note")).to_contain_text("pass --champions-vs-global CSV")
    await expect(page.locator("#knobs .note").first).to_contain_text("pass --tuning FILE")
    images = await page.evaluate(IMAGES)
    assert len(images) == 3 and all(image["width"] > 0 for image in images)
    # the page fits the phone's width: no sideways scrolling for the text, only inside wide tables
    assert await page.evaluate("() => document.querySelector('h1').getBoundingClientRect().right") <= PHONE["width"]
    await shot(opened, screenshots, "report-phone")
    opened.assert_no_errors()
    await opened.context.close()
