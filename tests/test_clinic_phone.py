"""Clinic mode in a real browser at 360 px, in Indonesian: sign in, check a photo, tick consent,
"Simpan kasus", review, the list, the audit log. No page scrolls sideways or says a sentence in
English; axe-core finds nothing serious (when vendored)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import image_bytes, make_image, serve_on_loopback

pytest.importorskip("sqlalchemy")
from kulit.clinic.auth import hash_password  # noqa: E402
from kulit.clinic.config import ClinicSettings  # noqa: E402
from kulit.clinic.store import add_user, open_store  # noqa: E402
from kulit.serving.predict import Predictor  # noqa: E402
from kulit.web.app import create_app  # noqa: E402
from kulit.web.settings import Settings  # noqa: E402
from tests.test_web_phone import AXE, english_sentences, serious_axe_violations  # noqa: E402

pytestmark = pytest.mark.e2e
PASSWORD = "kata sandi panjang"
SHOTS = os.environ.get("KULIT_SCREENSHOTS")  # a folder: keep a PNG of every page


@pytest.fixture(scope="module")
def clinic_url(onnx_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[str]:
    root = tmp_path_factory.mktemp("clinic-phone")
    clinic = ClinicSettings(database_url=f"sqlite:///{root}/c.db")
    store = open_store(clinic)
    with store.session() as db:
        for name, role in (("ani", "health_worker"), ("budi", "reviewer"), ("citra", "admin")):
            add_user(db, name, role, "Puskesmas Sukamaju", hash_password(PASSWORD))
    app = create_app(Settings(model_dir=onnx_model_dir), Predictor(onnx_model_dir), clinic)
    with serve_on_loopback(app) as url:
        yield url
    store.engine.dispose()


def look(page: Any, name: str) -> None:
    """The checks every clinic page passes at 360 px."""
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 360, f"{name}: {width} px wide"
    assert english_sentences(page) == [], name
    if AXE.is_file():
        assert serious_axe_violations(page) == [], name
    if SHOTS:
        page.screenshot(path=str(Path(SHOTS) / f"clinic-{name}.png"), full_page=True)


def sign_in(page: Any, url: str, name: str) -> None:
    page.context.clear_cookies()
    page.goto(f"{url}/clinic/login?lang=id")
    look(page, f"login-{name}")
    page.fill("#name", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/clinic?lang=id")


def test_clinic_flow_on_a_phone(browser: Any, clinic_url: str, tmp_path: Path) -> None:
    photo = tmp_path / "foto.jpg"
    photo.write_bytes(image_bytes(make_image(3, (160, 120), 1)))
    ctx = browser.new_context(viewport={"width": 360, "height": 740}, device_scale_factor=2,
                              is_mobile=True, has_touch=True, locale="id-ID",
                              bypass_csp=True)  # to inject axe-core
    page = ctx.new_page()
    sign_in(page, clinic_url, "ani")
    look(page, "cases-empty")
    page.click("text=Periksa foto baru")
    look(page, "check")
    page.set_input_files("#image", str(photo))
    page.click("form.upload button[type=submit]")
    page.wait_for_selector("#save-case")
    look(page, "result")
    page.click("#save-case button[type=submit]")  # consent not ticked: the browser holds it
    assert page.evaluate("() => document.querySelector('#consent').validity.valueMissing")
    page.check("#consent")
    page.select_option("#body_site", "arm")
    page.click("#save-case button[type=submit]")
    page.wait_for_selector("#saved")
    look(page, "case-saved")
    assert page.evaluate("() => document.querySelector('.case-photo').naturalWidth") > 0
    case_url = page.url.split("&")[0]

    sign_in(page, clinic_url, "budi")
    page.goto(case_url)
    page.select_option("#diagnosis-select", "Psoriasis")
    page.select_option("#review-referral", "true")
    page.click("#review button[type=submit]")
    page.wait_for_selector("#diagnosis:has-text('Psoriasis')")
    look(page, "case-reviewed")
    page.goto(f"{clinic_url}/clinic?lang=id")
    assert page.locator("#cases li").count() == 1
    look(page, "cases")

    sign_in(page, clinic_url, "citra")
    page.goto(f"{clinic_url}/clinic/audit?lang=id")
    assert page.locator("#audit li").count() >= 5
    look(page, "audit")
    ctx.close()
