"""The API's interactive docs load every asset from the server itself, as the README says:
no fonts, logos or scripts from other hosts, no call to an online validator, and no inline
script."""

from __future__ import annotations

import re

from django.conf import settings
from django.contrib.staticfiles import finders
from django.test import Client

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


def test_redoc_is_gone(client: Client, db: None) -> None:
    assert client.get("/api/v1/redoc/").status_code == 404


def test_swagger_ui_loads_everything_from_this_server(client: Client, db: None) -> None:
    page = client.get("/api/v1/docs/")
    html = page.content.decode()

    assets = ASSET.findall(html)
    assert page.status_code == 200
    assert len(assets) >= 3
    assert [url for url in assets if not url.startswith("/") or url.startswith("//")] == []
    for url in assets:
        if url.startswith(settings.STATIC_URL) or url.startswith(f"/{settings.STATIC_URL}"):
            assert finders.find(url.split(settings.STATIC_URL, 1)[1]), url  # shipped in a package, served locally
    assert "<script>" not in html.replace(" ", "")  # every script is a file (the CSP allows no inline one)


def test_swagger_ui_asks_no_online_validator(client: Client, db: None) -> None:
    script_url = next(url for url in ASSET.findall(client.get("/api/v1/docs/").content.decode()) if "script" in url)

    script = client.get(script_url.replace("&amp;", "&"))

    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert '"validatorUrl": null' in script.content.decode()
