"""The phone in a real browser: the Indonesian flow at 360 px, printed, switched, checked.

Debian's Chromium driven by Playwright against uvicorn (the `server` fixture of
test_web_e2e). axe-core is vendored at build time (scripts/vendor_web_ui.sh), never a CDN.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from kulit.serving.i18n import STRINGS
from tests.conftest import image_bytes
from tests.test_web_e2e import a_photo, server  # noqa: F401 - fixtures

pytestmark = pytest.mark.e2e

AXE = Path(__file__).parents[1] / "web/ui/node_modules/axe-core/axe.min.js"
PAGE_BUDGET = 60_000  # bytes transferred for a result page on a phone's data plan

# Words that mark a sentence as English; none of them is an Indonesian word.
ENGLISH = frozenset(
    "the and is are of to with this that from for not you your it be can only what when "
    "which there their have has was were will would should photo photos skin doctor".split()
)
# Proper names and units that may stay as they are on an Indonesian page.
ALLOWED = ("Monkeypox Skin Images Dataset", "Te Whatu Ora", "clothing-dataset-small",
           "DermNet NZ", "Bala dkk.")


def english_sentences(page: Any) -> list[str]:
    """Lines of the page's visible text (minus parts marked as another language or as a name)
    that hold two or more English words."""
    text: str = page.evaluate("""() => {
        const body = document.body.cloneNode(true);
        body.querySelectorAll('script, style, [translate="no"], [lang]:not([lang="id"])')
            .forEach((el) => el.remove());
        return body.innerText;
    }""")
    found = []
    for line in text.splitlines():
        for name in ALLOWED:
            line = line.replace(name, "")
        words = set(re.findall(r"[a-z]+", line.lower()))
        if len(words & ENGLISH) >= 2:
            found.append(line.strip())
    return found


def serious_axe_violations(page: Any) -> list[str]:
    page.add_script_tag(content=AXE.read_text())
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']}: {v['help']} ({len(v['nodes'])})" for v in result["violations"]
            if v["impact"] in ("serious", "critical")]


def check_page(page: Any, where: str) -> None:
    assert page.evaluate("document.documentElement.lang") == "id", where
    assert english_sentences(page) == [], where
    assert serious_axe_violations(page) == [], where
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), where


def test_indonesian_phone_flow(server: str, browser, tmp_path: Path) -> None:  # noqa: F811
    if not AXE.is_file():
        pytest.skip("run scripts/vendor_web_ui.sh (vendors axe-core)")
    from playwright.sync_api import expect

    id_ = STRINGS["id"]
    # bypass_csp: axe is injected as an inline script, which the pages' CSP refuses
    context = browser.new_context(viewport={"width": 360, "height": 740}, bypass_csp=True,
                                  locale="id-ID")
    page = context.new_page()
    page.set_default_timeout(20_000)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))

    # Upload page
    page.goto(server + "/?lang=id")
    check_page(page, "upload")

    # A 0-byte file: the same words as the server's
    page.set_input_files("#image", files=[{"name": "kosong.jpg", "mimeType": "image/jpeg",
                                           "buffer": b""}])
    expect(page.locator("#upload-error")).to_contain_text(id_["err_missing_field"])

    # Upload a photo -> result; measure what the result page cost on the wire
    page.set_input_files("#image", str(a_photo(tmp_path)))
    with page.expect_response(lambda r: "/predict" in r.url and r.request.method == "POST") \
            as resp_info:
        page.click("#submit")
    response = resp_info.value
    sizes = response.request.sizes()
    transferred = sizes["responseBodySize"] + sizes["responseHeadersSize"]
    assert response.headers.get("content-encoding") == "gzip"
    assert transferred < PAGE_BUDGET, transferred
    expect(page.locator("#verdict")).to_be_visible()
    check_page(page, "result")
    status = page.locator("#verdict").get_attribute("data-status")
    classes = page.locator(".bar-row").evaluate_all("rows => rows.map(r => r.dataset.class)")
    badges = page.locator(".badge").count()
    alert = page.locator('[role="alert"] #doctor-title').count() > 0
    assert badges == 0 or alert  # the badge only comes with the melanoma rule's alert

    # Print view: the facts a doctor needs, no navigation or buttons
    expect(page.locator("#print-button")).to_be_visible()  # JavaScript showed it
    page.emulate_media(media="print")
    expect(page.locator(".main-nav")).to_be_hidden()
    expect(page.locator("#print-button")).to_be_hidden()
    facts = page.locator(".print-facts")
    expect(facts).to_be_visible()
    expect(facts).to_contain_text(re.compile(id_["print_model"] + r"\s*\S+"))
    assert re.search(r"\d{4}", page.locator("#checked-at").inner_text())
    expect(page.locator(".print-only").first).to_be_visible()
    expect(page.locator(".disclaimer-box")).to_be_visible()
    page.pdf(path=str(tmp_path / "hasil.pdf"))
    page.emulate_media(media="screen")

    # Language switch keeps the result, and back
    page.get_by_role("button", name="English").click()
    page.wait_for_url("**/predict?lang=en")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#verdict")).to_be_visible()
    if classes:
        expect(page.locator(".bar-row").first).to_have_attribute("data-class", classes[0])
    page.get_by_role("button", name="Bahasa Indonesia").click()
    page.wait_for_url("**/predict?lang=id")
    expect(page.locator("h1")).to_have_text(id_["result_title"])
    assert page.locator("#verdict").get_attribute("data-status") == status or status in (
        "answered", "uncertain")  # a re-check of the page's JPEG copy may cross the threshold

    # How it works for this photo: the p column on screen, its scroll area reachable by keyboard
    if page.locator("#explain-button").count():
        page.click("#explain-button")
        page.wait_for_url("**/explain?lang=id")
        check_page(page, "how it works (photo)")
        p_head = page.locator("#ex-softmax thead th").nth(1)
        expect(p_head).to_have_text("p")
        box = p_head.bounding_box()
        assert box and box["x"] + box["width"] <= 360
        expect(page.locator(".ex-scroll")).to_have_attribute("tabindex", "0")

    # How it works from the navigation: the example, summary first
    page.get_by_role("link", name=id_["nav_how"]).click()
    page.wait_for_url("**/explain?lang=id")
    expect(page.locator("#ex-summary-title")).to_have_text(id_["ex_summary_title"])
    check_page(page, "how it works (example)")

    # About
    page.get_by_role("link", name=id_["nav_about"]).click()
    page.wait_for_url("**/about?lang=id")
    check_page(page, "about")

    # /docs renders offline, in a page that says its language
    page.goto(server + "/docs")
    expect(page.locator(".swagger-ui .info")).to_be_visible()
    assert page.evaluate("document.documentElement.lang") == "en"

    assert all(u.startswith((server, "data:", "blob:")) for u in urls), urls
    context.close()


def test_a_big_photo_is_shrunk_before_upload(server: str, browser) -> None:  # noqa: F811
    rng = __import__("numpy").random.default_rng(0)
    noise = (rng.random((1500, 2000, 3)) * 255).astype("uint8")
    from PIL import Image

    big = image_bytes(Image.fromarray(noise), quality=92)  # ~2 MB of detail, 3 MP
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.goto(server + "/?lang=id")
    page.set_input_files("#image", files=[{"name": "IMG_1234.jpg", "mimeType": "image/jpeg",
                                           "buffer": big}])
    with page.expect_request(lambda r: "/predict" in r.url and r.method == "POST") as req:
        page.click("#submit")
    sent = int(req.value.header_value("content-length") or 0)
    assert sent > 0
    assert sent < len(big) / 2, (sent, len(big))
    page.wait_for_url("**/predict**")
    assert page.locator("#verdict").count() == 1
    context.close()
