"""A real browser (Debian's Chromium, Playwright) against uvicorn on a free loopback port."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kulit import DISCLAIMER_EN, DISCLAIMER_ID
from tests.conftest import SHIPPED_MODEL, SKIN8, image_bytes, make_image, serve_on_loopback

pytestmark = pytest.mark.e2e



def pick_model(fallback: Path) -> Path:
    """The shipped model when it exists and loads, else the small test model."""
    from kulit.errors import ModelError
    from kulit.serving.predict import Predictor

    if (SHIPPED_MODEL / "card.json").is_file():
        try:
            Predictor(SHIPPED_MODEL)
            return SHIPPED_MODEL
        except ModelError:
            pass
    return fallback


def a_photo(tmp: Path) -> Path:
    """A real skin8 photo when the data is here, else a generated one."""
    if SKIN8.is_dir():
        return next(p for p in sorted((SKIN8 / "Psoriasis").iterdir())
                    if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    path = tmp / "generated.jpg"
    path.write_bytes(image_bytes(make_image(0, (320, 240))))
    return path


@pytest.fixture(scope="module")
def server(onnx_model_dir: Path) -> Iterator[str]:
    from kulit.web.app import create_app
    from kulit.web.settings import Settings

    # the server path; the on-device check has its own tests (test_device.py)
    app = create_app(Settings(model_dir=pick_model(onnx_model_dir), device=False))
    with serve_on_loopback(app) as url:
        yield url


def test_upload_result_language_and_errors(server: str, browser, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from kulit.serving.i18n import STRINGS

    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.set_default_timeout(15_000)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))

    # Upload page, in Bahasa Indonesia by default, fits a 360 px screen.
    page.goto(server + "/")
    expect(page.locator("html")).to_have_attribute("lang", "id")
    expect(page.locator("h1")).to_have_text(STRINGS["id"]["index_title"])
    expect(page.locator("footer")).to_contain_text(DISCLAIMER_ID)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")

    # Choose a real photo: preview first, then send.
    page.set_input_files("#image", str(a_photo(tmp_path)))
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#upload-error")).to_be_hidden()
    page.click("#submit")
    page.wait_for_url("**/predict**")
    # the model's top 3, or its shortlist when it gives one (2 to all 8 conditions)
    expect(page.locator(".bar-row").first).to_be_visible()
    assert 1 <= page.locator(".bar-row").count() <= 8
    expect(page.locator(".disclaimer-box")).to_contain_text(DISCLAIMER_ID)
    expect(page.locator("footer")).to_contain_text(DISCLAIMER_ID)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / "result-id.png"), full_page=True)

    # The heatmap toggles from the keyboard.
    overlay, base = page.locator(".photo .overlay"), page.locator(".photo .base")
    expect(base).to_be_visible()
    expect(overlay).to_be_hidden()
    page.focus("#show-heatmap")
    page.keyboard.press("Space")
    expect(overlay).to_be_visible()
    expect(base).to_be_hidden()

    # Switch to English: the result stays (the page re-posts its crop); the choice is
    # remembered without ?lang=.
    page.get_by_role("button", name="English").click()
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text(STRINGS["en"]["result_title"])
    page.goto(server + "/about")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("h1")).to_have_text("About the model")

    # Same photo, English result.
    page.goto(server + "/")
    page.set_input_files("#image", str(a_photo(tmp_path)))
    page.click("#submit")
    page.wait_for_url("**/predict**")
    # the model's top 3, or its shortlist when it gives one (2 to all 8 conditions)
    expect(page.locator(".bar-row").first).to_be_visible()
    assert 1 <= page.locator(".bar-row").count() <= 8
    n = page.locator(".bar-row").count()
    expect(page.locator("#top-title")).to_have_text(f"The {n} closest conditions")
    expect(page.locator(".disclaimer-box")).to_contain_text(DISCLAIMER_EN)

    # A text file: the browser says so before sending anything.
    page.goto(server + "/")
    page.set_input_files("#image", files=[
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo\n"}])
    expect(page.locator("#upload-error")).to_be_visible()
    expect(page.locator("#upload-error")).to_contain_text(STRINGS["en"]["err_not_image"])
    page.click("#submit")
    expect(page).to_have_url(server + "/")  # blocked client-side

    # Drag and drop puts the photo in the form and shows the preview.
    png = image_bytes(make_image(1, (80, 60)), "PNG")
    page.evaluate(
        """(bytes) => {
            const dt = new DataTransfer();
            dt.items.add(new File([new Uint8Array(bytes)], "dropped.png", {type: "image/png"}));
            document.getElementById("drop").dispatchEvent(
                new DragEvent("drop", {dataTransfer: dt, bubbles: true, cancelable: true}));
        }""",
        list(png),
    )
    expect(page.locator("#preview")).to_be_visible()
    expect(page.locator("#upload-error")).to_be_hidden()
    assert page.evaluate("document.getElementById('image').files[0].name") == "dropped.png"

    # Back to Bahasa Indonesia.
    page.get_by_role("link", name="Bahasa Indonesia").click()
    expect(page.locator("html")).to_have_attribute("lang", "id")
    page.reload()
    expect(page.locator("html")).to_have_attribute("lang", "id")

    # Nothing was fetched from any other host.
    assert urls and all(u.startswith((server, "data:", "blob:")) for u in urls), urls
    context.close()


def test_without_javascript_the_server_reports_the_error(server: str, browser,
                                                         tmp_path: Path) -> None:
    from playwright.sync_api import expect

    from kulit.serving.i18n import STRINGS

    context = browser.new_context(java_script_enabled=False,
                                  viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(server + "/?lang=en")
    page.set_input_files("#image", files=[
        {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a photo\n"}])
    page.click("#submit")
    page.wait_for_url("**/predict**")
    expect(page.locator("#upload-error")).to_contain_text(STRINGS["en"]["err_not_image"])
    expect(page.locator("html")).to_have_attribute("lang", "en")

    # And a skin photo gives the result page, all without JavaScript (a generated texture is
    # "not a skin photo" to a model with a trust gate, so a real photo when the data is here).
    page.set_input_files("#image", str(a_photo(tmp_path)))
    page.click("#submit")
    # the model's top 3, or its shortlist when it gives one (2 to all 8 conditions)
    expect(page.locator(".bar-row").first).to_be_visible()
    assert 1 <= page.locator(".bar-row").count() <= 8
    expect(page.locator(".disclaimer-box")).to_contain_text(DISCLAIMER_EN)
    context.close()


@pytest.mark.parametrize("javascript", [True, False])
def test_how_it_works_view(server: str, browser, tmp_path: Path, javascript: bool) -> None:
    from playwright.sync_api import expect

    from kulit.serving.i18n import STRINGS

    context = browser.new_context(java_script_enabled=javascript,
                                  viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(server + "/?lang=id")
    page.set_input_files("#image", str(a_photo(tmp_path)))
    page.click("#submit")
    page.wait_for_url("**/predict**")
    verdict = page.locator("#verdict").inner_text()

    # The result page re-posts the same square photo; nothing is stored on the server.
    page.click("#explain-button")
    page.wait_for_url("**/explain**")
    expect(page.locator("h1")).to_have_text(STRINGS["id"]["ex_title"])
    expect(page.locator("#ex-patch table.patch")).to_have_count(3)
    expect(page.locator("#ex-patch table.patch").first.locator("td")).to_have_count(16)
    expect(page.locator("#ex-kernel td")).to_have_count(9)
    expect(page.locator("#ex-conv table")).to_have_count(3)
    grid = page.locator("#ex-grid")
    expect(grid).to_be_visible()
    assert page.evaluate("document.getElementById('ex-grid').naturalWidth") > 0
    classes = page.evaluate("document.querySelectorAll('#ex-softmax tbody tr').length")
    assert classes >= 3
    expect(page.locator("#verdict")).to_have_text(verdict)
    expect(page.locator(".disclaimer-box").last).to_contain_text(DISCLAIMER_ID)
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(tmp_path / f"explain-js{int(javascript)}.png"), full_page=True)
    context.close()
