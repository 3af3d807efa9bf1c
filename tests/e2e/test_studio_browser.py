"""The studio (the web page at `/`) in a real browser over the real service: make a video and watch it,
cancel and delete, the API-key prompt, and how the pages look at desktop and phone width.

Drives Debian's Chromium through Playwright: the session's one browser (`browser`, tests/fixtures/browser.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fixtures.browser import playwright_sync_api
from tests.fixtures.media import video_bytes
from tests.fixtures.serve import API_KEYS, Deployed

pytestmark = pytest.mark.e2e


def expect(actual: Any, message: str | None = None) -> Any:
    """Playwright's `expect`. Imported when used: without Playwright the `browser` fixture has already failed
    the test, saying how to install it."""
    return playwright_sync_api().expect(actual, message)


JOB_MS = 120_000  # a job, from create to completed, on a busy CI machine
SCREENSHOTS = Path(__file__).parents[2] / "out" / "screenshots"
KEY = API_KEYS[0]
PROMPT = "A lighthouse keeper climbs the stairs at dusk. A whale glows under the sea."

PLAYER_LOADED = (
    "() => { const v = document.querySelector('#player-video'); return v.readyState >= 1 && v.duration > 3; }"
)
IMAGE_LOADED = """(selector) => {
  const img = document.querySelector(selector);
  return !!img && img.complete && img.naturalWidth > 0;
}"""
CLIP_AT_ITS_END = """() => {
  const v = document.querySelector('#reference-video');
  return v.readyState >= 2 && v.duration > 0 && Math.abs(v.currentTime - v.duration) < 0.01;
}"""
CAPTION_CUES = """() => {
  const track = document.querySelector('#player-video').textTracks[0];
  if (!track) return null;
  track.mode = 'showing';
  return track.cues && track.cues.length ? [...track.cues].map((cue) => cue.text) : null;
}"""


@pytest.fixture(scope="module")
def app(serial_app: Deployed) -> Deployed:
    # One job at a time, so a second job waits in the queue for as long as the first one runs.
    return serial_app


@dataclass
class Tab:
    """A browser page and the errors it reported (uncaught exceptions and console errors)."""

    page: Any
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser) -> Iterator[Tab]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = Tab(context.new_page())
    tab.page.on("pageerror", lambda exc: tab.errors.append(f"uncaught: {exc}"))
    tab.page.on(
        "console", lambda msg: tab.errors.append(f"console: {msg.text}") if msg.type == "error" else None
    )
    yield tab
    context.close()


def create_from_form(page: Any, prompt: str, seconds: str) -> str:
    """Fill the create form, submit it, and return the id of the card that appears first in the list."""
    page.get_by_label("Prompt", exact=True).fill(prompt)
    page.get_by_label("Seconds", exact=True).fill(seconds)
    page.get_by_role("button", name="Create video").click()
    card = page.locator("#video-list > li").first
    expect(card).to_contain_text(prompt[:20], timeout=30_000)
    return card.get_attribute("data-id")


def test_a_video_made_from_the_page_plays_with_captions(app, tab):
    page = tab.page
    page.goto(f"{app.url}/")
    video_id = create_from_form(page, PROMPT, "4")
    assert app.client.get(f"/v1/videos/{video_id}").json()["prompt"] == PROMPT

    page.locator(f'#video-list a[href="#/videos/{video_id}"]').click()
    expect(page.locator("#video-status")).to_have_text("completed", timeout=JOB_MS)
    expect(page.locator("#video-progress")).to_have_js_property("value", 100)
    expect(page.locator("#video-percent")).to_have_text("100%")
    video = app.client.get(f"/v1/videos/{video_id}").json()
    scenes = page.locator("#scene-list > li")
    expect(scenes).to_have_count(len(video["scenes"]))
    # Each scene says a fallback made it, and why (the CPU profile runs `fallback: always`).
    for i, scene in enumerate(video["scenes"]):
        expect(scenes.nth(i).locator(".badge")).to_have_text("fallback")
        expect(scenes.nth(i)).to_contain_text(scene["fallback_reason"])
        expect(scenes.nth(i)).to_contain_text(scene["caption"])
        # ...and which voice spoke it (narration is on in the form by default).
        expect(scenes.nth(i).locator(".voice")).to_contain_text(f"espeak {scene['narration']['voice']}")

    page.wait_for_function(PLAYER_LOADED, timeout=30_000)
    cues = page.wait_for_function(CAPTION_CUES, timeout=30_000).json_value()
    # A cue per spoken sentence.
    assert cues == [
        sentence["text"] for scene in video["scenes"] for sentence in scene["narration"]["sentences"]
    ]
    links = page.locator("#downloads a")
    expect(links).to_have_count(5)
    hrefs = links.evaluate_all("links => links.map((link) => link.href)")
    assert [href.rsplit("variant=", 1)[1] for href in hrefs] == [
        "video",
        "thumbnail",
        "spritesheet",
        "captions",
        "audio",
    ]
    assert all(page.request.get(href).ok for href in hrefs)

    # Back in the list, the card shows its thumbnail, and the pointer's x scrubs the spritesheet.
    page.get_by_role("link", name="All videos").click()
    thumb = page.locator(f'#video-list li[data-id="{video_id}"] .thumb')
    page.wait_for_function(IMAGE_LOADED, arg=f'li[data-id="{video_id}"] img', timeout=30_000)
    box = thumb.bounding_box()
    middle = box["y"] + box["height"] / 2
    thumb.hover()  # loads the spritesheet
    sheet = thumb.locator(".sheet")
    expect(sheet).to_have_css("background-image", re.compile("^url"), timeout=10_000)
    page.mouse.move(box["x"] + 2, middle)
    expect(thumb).to_have_class(re.compile(r"\bscrubbing\b"))
    expect(sheet).to_have_css("background-position", "0% 0%")
    page.mouse.move(box["x"] + box["width"] - 2, middle)
    expect(sheet).to_have_css("background-position", "100% 100%")
    assert tab.errors == []


def test_a_clip_chosen_as_the_reference_is_previewed_and_continued(app, tab):
    page = tab.page
    page.goto(f"{app.url}/")
    clip = video_bytes([(200, 30, 30)] * 11 + [(30, 200, 60)])
    chooser = page.get_by_label("Reference image or clip")
    chooser.set_input_files({"name": "clip.mp4", "mimeType": "video/mp4", "buffer": clip})
    expect(page.get_by_label("Preview of the reference clip, at its last frame")).to_be_visible()
    # It rests on the frame the new video continues from: the clip's last.
    page.wait_for_function(CLIP_AT_ITS_END, timeout=10_000)
    expect(page.locator("#reference-image")).to_be_hidden()
    video_id = create_from_form(page, "Then the tide comes in.", "2")
    finished = app.wait(video_id)
    assert finished["scenes"][0]["keyframe_generator"] == "input_video", finished
    # Removing the clip takes its preview away.
    page.get_by_role("button", name="Remove", exact=True).click()
    expect(page.locator("#reference-preview")).to_be_hidden()
    assert tab.errors == []


def test_a_video_longer_than_asked_shows_its_notice_and_lengths_people_read(app, tab):
    # Three sentences cannot be said in 2 s: the video runs longer, and its notice says why.
    body = {"prompt": PROMPT + " It swims away into the night.", "seconds": "2"}
    video_id = app.client.post("/v1/videos", json=body).json()["id"]
    page = tab.page
    page.goto(f"{app.url}/#/videos/{video_id}")
    expect(page.locator("#video-status")).to_have_text("completed", timeout=JOB_MS)
    video = app.client.get(f"/v1/videos/{video_id}").json()
    (notice,) = video["notices"]
    notices = page.locator("#video-notices li")
    expect(notices).to_have_count(1)
    expect(notices.first).to_have_text(notice["message"])
    # Lengths to a tenth of a second: "2.6 s", never "2.648208616780045 s".
    expect(page.locator("#video-seconds")).to_have_text(re.compile(r"^\d+(\.\d)? s · \d+x\d+$"))
    lengths = page.locator("#scene-list .facts span:first-child").all_text_contents()
    assert len(lengths) == len(video["scenes"]) and all(re.fullmatch(r"\d+(\.\d)? s", x) for x in lengths), (
        lengths
    )
    assert not tab.errors
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "video-notice.png", full_page=True)


def test_cancel_and_delete_from_the_page(app, tab):
    page = tab.page
    # The runner takes one job at a time: while this one runs, the page's video waits in the queue. The
    # most scenes allowed (8 of 2 s), tens of seconds to make here, so it still runs when the page looks.
    blocker = app.client.post("/v1/videos", json={"prompt": "A long walk. Then another.", "seconds": 16})
    assert blocker.status_code == 200, blocker.text
    blocker = blocker.json()
    page.goto(f"{app.url}/")
    expect(page.locator(f'#video-list li[data-id="{blocker["id"]}"]')).to_have_count(1)

    # A refused create shows the API's message beside the form, naming the field.
    page.get_by_label("Prompt", exact=True).fill("A ship sails at night. The storm breaks.")
    page.get_by_label("Seconds", exact=True).fill("600")
    page.get_by_role("button", name="Create video").click()
    expect(page.locator("#create-error")).to_contain_text("Seconds (seconds)")
    expect(page.locator("#create-error")).to_contain_text("at most")
    expect(page.get_by_label("Seconds", exact=True)).to_have_attribute("aria-invalid", "true")

    video_id = create_from_form(page, "A ship sails at night. The storm breaks.", "12")
    expect(page.locator("#create-error")).to_be_hidden()
    page.locator(f'#video-list a[href="#/videos/{video_id}"]').click()
    expect(page.locator("#video-queue")).to_contain_text("Queue position 1", timeout=30_000)

    page.get_by_role("button", name="Cancel video").click()
    expect(page.locator("#video-status")).to_have_text("cancelled", timeout=30_000)
    assert app.client.get(f"/v1/videos/{video_id}").json()["status"] == "cancelled"
    expect(page.get_by_role("button", name="Cancel video")).to_be_disabled()

    page.get_by_role("button", name="Delete video").click()
    page.get_by_role("button", name="Yes, delete").click()
    expect(page.locator("#list-heading")).to_be_visible()
    expect(page.locator(f'#video-list li[data-id="{blocker["id"]}"]')).to_have_count(1)
    expect(page.locator(f'#video-list li[data-id="{video_id}"]')).to_have_count(0)
    assert app.client.get(f"/v1/videos/{video_id}").status_code == 404
    app.client.delete(f"/v1/videos/{blocker['id']}")


def test_the_page_asks_for_an_api_key_and_then_lists_the_videos(keyed_app, tab):
    # keyed_app's client sends the key; the page starts without one.
    video = keyed_app.client.post("/v1/videos", json={"prompt": "A key turns. A door opens.", "seconds": 2})
    video_id = video.json()["id"]
    assert keyed_app.wait(video_id)["status"] == "completed"
    assert httpx.get(f"{keyed_app.url}/v1/videos").status_code == 401

    page = tab.page
    page.goto(f"{keyed_app.url}/")
    dialog = page.get_by_role("dialog", name="API key needed")
    expect(dialog).to_be_visible(timeout=30_000)
    page.get_by_label("API key", exact=True).fill("not-the-key")
    page.get_by_role("button", name="Use key").click()
    expect(dialog).to_contain_text("refused")
    page.get_by_label("API key", exact=True).fill(KEY)
    page.get_by_role("button", name="Use key").click()
    expect(dialog).to_be_hidden()

    card = page.locator(f'#video-list li[data-id="{video_id}"]')
    expect(card).to_contain_text("completed", timeout=30_000)
    # Media cannot send the header: the thumbnail comes as a blob fetched with the key.
    page.wait_for_function(IMAGE_LOADED, arg=f'li[data-id="{video_id}"] img', timeout=30_000)
    expect(card.locator("img")).to_have_attribute("src", re.compile("^blob:"))
    assert page.evaluate("sessionStorage.getItem('storyreel.apiKey')") == KEY

    card.get_by_role("link").click()
    expect(page.locator("#video-status")).to_have_text("completed", timeout=30_000)
    page.wait_for_function(
        "() => { const v = document.querySelector('#player-video'); return v.readyState >= 1 && v.duration > 1; }",
        timeout=30_000,
    )


def test_screenshots_at_desktop_and_phone_width(app, browser):
    video = app.client.post(
        "/v1/videos", json={"prompt": "A fox runs through snow. It finds a lantern.", "seconds": 4}
    )
    video_id = video.json()["id"]
    assert app.wait(video_id, timeout_s=JOB_MS / 1000)["status"] == "completed"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    for name, viewport in (
        ("desktop", {"width": 1280, "height": 800}),
        ("phone", {"width": 375, "height": 812}),
    ):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        page.goto(f"{app.url}/")
        card = page.locator(f'#video-list li[data-id="{video_id}"]')
        page.wait_for_function(IMAGE_LOADED, arg=f'li[data-id="{video_id}"] img', timeout=30_000)
        page.screenshot(path=SCREENSHOTS / f"list-{name}.png", full_page=True)
        widths = [page.evaluate("document.documentElement.scrollWidth")]

        card.get_by_role("link").click()
        expect(page.locator("#video-status")).to_have_text("completed", timeout=30_000)
        page.wait_for_function(PLAYER_LOADED, timeout=30_000)
        page.screenshot(path=SCREENSHOTS / f"video-{name}.png", full_page=True)
        widths.append(page.evaluate("document.documentElement.scrollWidth"))
        if name == "phone":
            assert max(widths) <= 375, f"horizontal scroll at phone width: {widths}"
        context.close()
    for shot in ("list-desktop", "list-phone", "video-desktop", "video-phone"):
        assert (SCREENSHOTS / f"{shot}.png").stat().st_size > 10_000
