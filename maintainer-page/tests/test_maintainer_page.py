"""The maintainer page in headless Chromium against the local stack, by accessible names."""

from __future__ import annotations

import contextlib
import http.server
import json
import math
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

from playwright.sync_api import Page, expect

from conftest import AUDIO, IMAGES, MARKUP_NAMES, MISSING, SPARE
from stack import Stack

# A function, not an expression: Playwright polls an expression with eval(), which the page's CSP
# (rightly) refuses as soon as the first check is false.
THUMBNAILS_LOADED = "() => [...document.querySelectorAll('#rows img')].every(i => i.complete && i.naturalWidth > 0)"


def rows(page: Page):
    return page.locator("#rows tr")


def row_names(page: Page) -> list[str]:
    return page.locator("#rows button.name").all_text_contents()


def open_page(page: Page, stack: Stack, deck: str, token: str | None):
    # From elsewhere, so that a new fragment on the same page is a new load, not a hashchange.
    page.goto("about:blank")
    response = page.goto(stack.page_url(deck, token))
    assert response is not None and response.status == 200
    return response


def loaded(page: Page, n: int) -> None:
    expect(page.get_by_role("status")).to_have_text(re.compile(rf"Loaded {n:,} files?\."))
    expect(rows(page)).to_have_count(n)


def format_bytes(n: int) -> str:
    """The page's formatBytes (model.js)."""
    if n < 1000:
        return f"{n} {'byte' if n == 1 else 'bytes'}"
    units = ["bytes", "kB", "MB", "GB", "TB"]
    i, v = 0, float(n)
    while v >= 1000 and i < len(units) - 1:
        v /= 1000
        i += 1
    return f"{v:.{1 if v < 10 else 0}f} {units[i]}"


def test_lists_the_deck_with_thumbnails_totals_and_a_strict_policy(page: Page, stack: Stack, main_deck: str):
    listing = stack.listing(main_deck)
    token = stack.token("maintain", [main_deck])
    response = open_page(page, stack, main_deck, token)
    headers = response.headers
    csp = headers["content-security-policy"]
    for part in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors",
        "require-trusted-types-for 'script'",
    ]:
        assert part in csp, csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"
    # The token left the address bar (and the history) at once.
    assert "token" not in page.url and page.url.endswith(f"/admin?deck={main_deck}")

    loaded(page, len(listing))
    assert sorted(row_names(page)) == sorted(f["filename"] for f in listing)
    # Every image's thumbnail loads (the signed URL works under the CSP); audio has none.
    images = page.locator("#rows img")
    expect(images).to_have_count(len(IMAGES))
    page.wait_for_function(THUMBNAILS_LOADED, timeout=20_000)
    # One row per file, with its name, type, sizes and note count as text.
    rocket = rows(page).filter(has=page.get_by_role("button", name="rocket.jpg", exact=True))
    expect(rocket).to_have_count(1)
    r = next(f for f in listing if f["filename"] == "rocket.jpg")
    cells = rocket.locator("td").all_text_contents()
    assert cells[1:] == [
        "rocket.jpg",
        f"{r['content_type'].split('/')[1].upper()} image",
        format_bytes(r["size"]),
        format_bytes(r["stored_size"]),
        "3",
        "Remove",
    ], cells
    missing = rows(page).filter(has=page.get_by_role("button", name=MISSING, exact=True))
    expect(missing.locator("td").first).to_have_text("missing")

    # Totals over the whole deck.
    expect(page.locator("#total-files")).to_have_text(str(len(listing)))
    stored = sum(f["stored_size"] or 0 for f in listing)
    saved = sum(max(0, f["size"] - f["stored_size"]) for f in listing if f["size"] and f["stored_size"])
    expect(page.locator("#total-stored")).to_have_text(format_bytes(stored))
    expect(page.locator("#total-saved")).to_have_text(format_bytes(saved))
    expect(page.locator("#total-notes")).to_have_text(str(sum(f["notes"] for f in listing)))


def test_search_narrows_the_list_as_the_api_matches(page: Page, stack: Stack, main_deck: str):
    open_page(page, stack, main_deck, stack.token("maintain", [main_deck]))
    everything = len(stack.listing(main_deck))
    loaded(page, everything)
    search = page.get_by_label("Search")
    # Upper case, an NFD "é" (as typed on a Mac), markup-looking text: the page shows exactly what
    # the API's own search (NFC, case-insensitive) answers.
    for q in ["ROCKET", "cafe\u0301", "&", "'", "=", ".png", "o", "nothing-like-this"]:
        search.fill(q)
        # Python's sort is by code point, as the page's "Name (A–Z)".
        want = sorted(f["filename"] for f in stack.listing(main_deck, q))
        if want:
            expect(page.locator("#rows button.name")).to_have_text(want)
        else:
            expect(rows(page)).to_have_count(0)
            expect(page.get_by_text("No file matches the search.")).to_be_visible()
    search.fill("")
    expect(rows(page)).to_have_count(everything)


def test_sorts_by_name_size_and_notes(page: Page, stack: Stack, main_deck: str):
    listing = stack.listing(main_deck)
    open_page(page, stack, main_deck, stack.token("maintain", [main_deck]))
    loaded(page, len(listing))
    sort = page.get_by_label("Sort by")
    size = {f["filename"]: f["stored_size"] or f["size"] or 0 for f in listing}
    notes = {f["filename"]: f["notes"] for f in listing}
    names = [f["filename"] for f in listing]
    cases = {
        "Name (A–Z)": sorted(names),
        "Name (Z–A)": sorted(names, reverse=True),
        "Size (largest first)": sorted(names, key=lambda n: (-size[n], n)),
        "Notes (most first)": sorted(names, key=lambda n: (-notes[n], n)),
        "Notes (fewest first)": sorted(names, key=lambda n: (notes[n], n)),
    }
    for label, want in cases.items():
        sort.select_option(label=label)
        expect(page.locator("#rows button.name")).to_have_text(want)


def test_an_image_previews_at_full_size_with_its_facts(page: Page, stack: Stack, main_deck: str, artifacts: Path):
    listing = {f["filename"]: f for f in stack.listing(main_deck)}
    open_page(page, stack, main_deck, stack.token("maintain", [main_deck]))
    loaded(page, len(listing))
    page.get_by_role("button", name="rocket.jpg", exact=True).click()
    preview = page.get_by_role("region", name="rocket.jpg")
    expect(preview).to_be_visible()
    image = preview.get_by_role("img", name="Preview of rocket.jpg")
    f = listing["rocket.jpg"]
    assert f["width"] and f["height"]
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image.evaluate("i => [i.naturalWidth, i.naturalHeight]") == [f["width"], f["height"]]
    facts = preview.locator("dl").inner_text()
    for text in [
        f["hash"],
        f"{f['width']} × {f['height']} pixels",
        "3 notes",
        f"{f['size']:,} bytes",
        f"{f['stored_size']:,} bytes",
    ]:
        assert text in facts, (text, facts)
    if f["stored_hash"] != f["hash"]:
        assert f["stored_hash"] in facts
    # The screenshot in the README: the seeded deck with an image previewed.
    page.set_viewport_size({"width": 1180, "height": 760})
    page.wait_for_function(THUMBNAILS_LOADED, timeout=20_000)
    shot = os.environ.get("MAINTAINER_PAGE_SCREENSHOT") or str(artifacts / "maintainer-page.jpg")
    if shot.endswith(".png"):
        page.screenshot(path=shot)
    else:
        page.screenshot(path=shot, type="jpeg", quality=82)


def test_audio_plays_and_reports_its_duration(page: Page, stack: Stack, main_deck: str, artifacts: Path):
    open_page(page, stack, main_deck, stack.token("maintain", [main_deck]))
    loaded(page, len(stack.listing(main_deck)))
    for name in AUDIO:
        page.get_by_role("button", name=name, exact=True).click()
        region = page.get_by_role("region", name=name)
        audio = region.locator("audio")
        expect(audio).to_have_attribute("controls", "")
        audio.evaluate("a => a.play()")
        page.wait_for_function(
            "a => Number.isFinite(a.duration) && a.duration > 0 && a.currentTime > 0 && !a.error",
            arg=audio.element_handle(),
            timeout=20_000,
        )
        duration = audio.evaluate("a => a.duration")
        assert math.isfinite(duration) and 0 < duration < 300, (name, duration)
        # The duration the service read from the file's headers agrees with the browser's decoder.
        shown = region.locator("div", has=page.locator("dt", has_text="Duration")).locator("dd").inner_text()
        assert shown.endswith(" seconds") and abs(float(shown.split()[0]) - duration) <= 0.15, (name, shown, duration)
        page.screenshot(path=str(artifacts / f"maintainer-page-{name}.png"))
        region.get_by_role("button", name="Close preview").click()
        expect(region).to_be_hidden()


def test_remove_takes_the_file_off_the_page_and_out_of_downloads(
    page: Page, stack: Stack, new_deck: Callable[..., str]
):
    deck = new_deck(
        {
            "a": {"remove-me.png": SPARE["remove-me.png"], "keep.png": SPARE["keep.png"]},
            "b": {"remove-me.png": SPARE["remove-me.png"]},
        }
    )
    assert stack.downloadable(deck) == {"remove-me.png", "keep.png"}
    open_page(page, stack, deck, stack.token("maintain", [deck]))
    loaded(page, 2)
    expect(page.locator("#total-notes")).to_have_text("3")

    # Cancel changes nothing.
    page.get_by_role("button", name="Remove remove-me.png").click()
    dialog = page.get_by_role("dialog", name="Remove file")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("2 notes of this deck use it")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_be_hidden()
    expect(rows(page)).to_have_count(2)

    page.get_by_role("button", name="Remove remove-me.png").click()
    dialog.get_by_role("button", name="Remove", exact=True).click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_role("status")).to_have_text("Removed “remove-me.png” from 2 notes.")
    expect(rows(page)).to_have_count(1)
    assert row_names(page) == ["keep.png"]
    expect(page.locator("#total-files")).to_have_text("1")
    expect(page.locator("#total-notes")).to_have_text("1")
    # The server agrees: neither the listing nor a subscriber's download has it any more.
    assert [f["filename"] for f in stack.listing(deck)] == ["keep.png"]
    assert stack.downloadable(deck) == {"keep.png"}
    # And a reload shows the same.
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("needs a maintainer token")
    expect(rows(page)).to_have_count(0)


def test_an_expired_token_shows_the_error_and_leaves_the_list(page: Page, stack: Stack, new_deck: Callable[..., str]):
    deck = new_deck({"a": {"keep.png": SPARE["keep.png"], "remove-me.png": SPARE["remove-me.png"]}})
    # Valid for a few more seconds (the API allows 30 s of clock skew past `exp`).
    exp = int(time.time()) - 20
    open_page(page, stack, deck, stack.token("maintain", [deck], exp=exp))
    loaded(page, 2)
    time.sleep(max(0.0, exp + 32 - time.time()))
    page.get_by_role("button", name="Remove remove-me.png").click()
    page.get_by_role("dialog").get_by_role("button", name="Remove", exact=True).click()
    alert = page.get_by_role("alert")
    expect(alert).to_have_text(re.compile("sign-in has expired"))
    expect(page.get_by_role("dialog")).to_be_hidden()
    expect(rows(page)).to_have_count(2)
    expect(page.locator("#total-files")).to_have_text("2")
    assert {f["filename"] for f in stack.listing(deck)} == {"keep.png", "remove-me.png"}

    # A token that has already expired shows the same words and no list.
    open_page(page, stack, deck, stack.token("maintain", [deck], exp=int(time.time()) - 120))
    expect(page.get_by_role("alert")).to_have_text(re.compile("sign-in has expired"))
    expect(rows(page)).to_have_count(0)


def test_a_failed_removal_says_why_and_leaves_the_list(page: Page, stack: Stack, main_deck: str):
    listing = stack.listing(main_deck)
    open_page(page, stack, main_deck, stack.token("maintain", [main_deck]))
    loaded(page, len(listing))
    answers = {
        "network": (lambda route: route.abort("internetdisconnected"), "could not be reached"),
        "403": (
            lambda route: route.fulfill(status=403, json={"error": {"code": "forbidden", "message": "no"}}),
            "not a maintainer of this deck",
        ),
        "503": (
            lambda route: route.fulfill(status=503, json={"error": {"code": "unavailable", "message": "busy"}}),
            "busy. Nothing was changed",
        ),
    }

    def only_delete(answer):
        def handler(route):
            if route.request.method == "DELETE":
                answer(route)
            else:
                route.continue_()

        return handler

    for kind, (answer, words) in answers.items():
        page.route(re.compile(r".*/v1/decks/[^/]+/media/.*"), only_delete(answer))
        page.get_by_role("button", name="Remove tiny.gif").click()
        page.get_by_role("dialog").get_by_role("button", name="Remove", exact=True).click()
        expect(page.get_by_role("alert")).to_contain_text(words)
        expect(page.get_by_role("dialog")).to_be_hidden()
        expect(rows(page)).to_have_count(len(listing))
        expect(page.get_by_role("button", name="tiny.gif", exact=True)).to_be_visible()
        expect(page.locator("#total-files")).to_have_text(str(len(listing)))
        page.unroute(re.compile(r".*/v1/decks/[^/]+/media/.*"))
        assert len(stack.listing(main_deck)) == len(listing), kind


def test_another_decks_maintainer_sees_nothing(page: Page, stack: Stack, main_deck: str, new_deck: Callable[..., str]):
    other = new_deck({"x": {"keep.png": SPARE["keep.png"]}}, prefix="other")
    for token in [stack.token("maintain", [other]), stack.token("upload download references", [main_deck])]:
        open_page(page, stack, main_deck, token)
        expect(page.get_by_role("alert")).to_have_text(re.compile("not a maintainer of this deck"))
        expect(rows(page)).to_have_count(0)
        expect(page.locator("#total-files")).to_have_text("–")
    # Their own deck shows only their own file.
    open_page(page, stack, other, stack.token("maintain", [other]))
    loaded(page, 1)
    assert row_names(page) == ["keep.png"]
    # No token at all: nothing is asked of the API, and the page says what it needs.
    open_page(page, stack, main_deck, None)
    expect(page.get_by_role("alert")).to_have_text(re.compile("needs a maintainer token"))
    expect(rows(page)).to_have_count(0)


def test_filenames_that_look_like_markup_are_shown_as_text(page: Page, stack: Stack, main_deck: str):
    open_page(page, stack, main_deck, stack.token("maintain", [main_deck]))
    loaded(page, len(stack.listing(main_deck)))
    for name in MARKUP_NAMES:
        button = page.get_by_role("button", name=name, exact=True)
        expect(button).to_have_text(name)
        expect(page.get_by_role("button", name=f"Remove {name}", exact=True)).to_be_visible()
        button.click()
        expect(page.get_by_role("heading", name=name, exact=True)).to_be_visible()
        page.get_by_role("button", name=f"Remove {name}", exact=True).click()
        expect(page.get_by_role("dialog")).to_contain_text(f"Remove “{name}”?")
        page.get_by_role("dialog").get_by_role("button", name="Cancel").click()
    # Nothing was parsed as HTML: no element from a name, no script ran (the page fixture also
    # fails on any alert() and any CSP violation).
    assert page.evaluate("window.__xss") is None
    assert page.locator("img[src='x'], [onerror], [data-x]").count() == 0
    assert page.locator("#rows img").count() == len(IMAGES)


def test_keyboard_alone_previews_and_removes(page: Page, stack: Stack, new_deck: Callable[..., str]):
    deck = new_deck({"a": {"keep.png": SPARE["keep.png"], "remove-me.png": SPARE["remove-me.png"]}})
    open_page(page, stack, deck, stack.token("maintain", [deck]))
    loaded(page, 2)
    kb = page.keyboard

    def focused() -> str:
        return page.evaluate(
            "document.activeElement.getAttribute('aria-label') || document.activeElement.textContent || document.activeElement.id"
        )

    def tab_to(name: str, limit: int = 15) -> None:
        for _ in range(limit):
            kb.press("Tab")
            if focused() == name:
                return
        raise AssertionError(f"Tab never reached {name!r} (at {focused()!r})")

    tab_to("search")
    kb.type("remove")
    expect(rows(page)).to_have_count(1)
    # Preview with Enter, close with Escape: focus goes back to the file.
    tab_to("remove-me.png")
    kb.press("Enter")
    expect(page.get_by_role("region", name="remove-me.png")).to_be_visible()
    assert page.evaluate("document.activeElement.id") == "preview-title"
    kb.press("Escape")
    expect(page.get_by_role("region", name="remove-me.png")).to_be_hidden()
    assert focused() == "remove-me.png"
    # Escape also cancels the confirmation.
    tab_to("Remove remove-me.png")
    kb.press("Enter")
    expect(page.get_by_role("dialog")).to_be_visible()
    assert focused() == "Cancel", "the safe choice has focus"
    kb.press("Escape")
    expect(page.get_by_role("dialog")).to_be_hidden()
    assert focused() == "Remove remove-me.png"
    # Enter, Tab to "Remove", Enter.
    kb.press("Enter")
    tab_to("Remove", limit=3)
    kb.press("Enter")
    expect(page.get_by_role("status")).to_have_text("Removed “remove-me.png” from 1 note.")
    expect(rows(page)).to_have_count(0)
    assert focused() == "search"
    kb.press("Control+A")
    kb.press("Backspace")
    expect(rows(page)).to_have_count(1)
    assert [f["filename"] for f in stack.listing(deck)] == ["keep.png"]


EMBEDDER = """<!doctype html><title>AnkiCollab</title><h1>Deck settings</h1>
<iframe id="media" title="Deck media" width="1100" height="700" src="{src}"></iframe>
<script>
window.addEventListener("message", (e) => {{
  if (e.origin !== {api_origin} || !e.data) return;
  if (e.data.type === "ankicollab-media-ready") {{
    e.source.postMessage({{type: "ankicollab-media-token", token: {token}}}, e.origin);
  }}
}});
</script>"""


@contextlib.contextmanager
def serve_pages(port: int, pages: dict[str, str]) -> Iterator[None]:
    """A web server of our own on loopback (Chromium lets only local pages frame local ones)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path, "").encode()
            self.send_response(200 if body else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def test_embedding_by_an_allowed_origin_with_a_posted_token(page: Page, stack: Stack, main_deck: str):
    allowed = stack.env.get("MAINTAINER_PAGE_EMBED_ORIGINS", "").split()
    assert allowed, "the stack names an embedding origin (scripts/lib.sh)"
    port = urllib.parse.urlsplit(allowed[0]).port
    assert port, allowed
    token = stack.token("maintain", [main_deck])
    html = EMBEDDER.format(src=stack.page_url(main_deck), api_origin=json.dumps(stack.api), token=json.dumps(token))
    opener = f"""<!doctype html><title>x</title><script>
      const w = window.open({json.dumps(stack.page_url(main_deck))});
      setInterval(() => w.postMessage({{type: "ankicollab-media-token", token: {json.dumps(token)}}}, "*"), 200);
    </script>"""
    with serve_pages(port, {"/deck": html, "/open": opener}):
        page.goto(f"{allowed[0]}/deck")
        frame = page.frame_locator("#media")
        expect(frame.get_by_role("status")).to_have_text(re.compile(r"Loaded \d+ files\."))
        expect(frame.get_by_role("button", name="rocket.jpg", exact=True)).to_be_visible()

        # Another origin (the same server by another name) can neither frame the page
        # (frame-ancestors) nor hand a token to it.
        elsewhere = f"http://localhost:{port}"
        page.goto(f"{elsewhere}/deck")
        page.wait_for_timeout(1500)
        child = next((f for f in page.frames if f != page.main_frame), None)
        assert child is None or child.url.startswith("chrome-error:"), child and child.url
        with page.expect_popup() as popup_info:
            page.goto(f"{elsewhere}/open")
        popup = popup_info.value
        expect(popup.get_by_role("alert")).to_have_text(re.compile("needs a maintainer token"))
        expect(popup.locator("#rows tr")).to_have_count(0)


def test_ten_thousand_files_load_page_search_and_sort_smoothly(page: Page, stack: Stack):
    """The API mocked with a 10,000-file deck whose pages include empty ones with a cursor (as a
    bounded search returns them): the page follows every cursor and stays quick."""
    n, per_page = 10_000, 200
    files = [
        {
            "filename": f"f{i:05d}.{'mp3' if i % 10 == 0 else 'png'}",
            "hash": f"{i:064x}",
            "status": "ready",
            "size": 1000 + i,
            "stored_size": 900 + i,
            "content_type": "audio/mpeg" if i % 10 == 0 else "image/webp",
            "width": None if i % 10 == 0 else 64,
            "height": None if i % 10 == 0 else 64,
            "stored_hash": f"{i:064x}",
            "notes": i % 7,
            "url": None,
            "thumbnail_url": None,
        }
        for i in range(n)
    ]
    requests: list[str] = []

    def serve(route):
        url = route.request.url
        requests.append(url)
        cursor = int(url.split("cursor=")[1]) if "cursor=" in url else 0
        # Every other answer is an empty page that still has a cursor.
        if cursor % 2 == 1:
            body = {"files": [], "next_cursor": str(cursor + 1)}
        else:
            start = cursor // 2 * per_page
            chunk = files[start : start + per_page]
            more = start + per_page < n
            body = {"files": chunk, "next_cursor": str(cursor + 1) if more else None}
        route.fulfill(status=200, content_type="application/json", body=json.dumps(body))

    page.route(re.compile(r".*/v1/decks/big/media.*"), serve)
    started = time.monotonic()
    open_page(page, stack, "big", "any")
    expect(page.get_by_role("status")).to_have_text("Loaded 10,000 files.", timeout=60_000)
    load_s = time.monotonic() - started
    assert len(requests) == 2 * (n // per_page) - 1, len(requests)
    expect(page.locator("#total-files")).to_have_text("10,000")
    expect(rows(page)).to_have_count(100)
    expect(page.locator("#page-info")).to_have_text("Page 1 of 100")

    def timed(action, check) -> float:
        t = time.monotonic()
        action()
        check()
        return time.monotonic() - t

    timings = {
        "next page": timed(
            lambda: page.get_by_role("button", name="Next page").click(),
            lambda: expect(page.locator("#page-info")).to_have_text("Page 2 of 100"),
        ),
        "sort by size": timed(
            lambda: page.get_by_label("Sort by").select_option(label="Size (largest first)"),
            lambda: expect(page.locator("#rows button.name").first).to_have_text("f09999.png"),
        ),
        "search": timed(
            lambda: page.get_by_label("Search").fill("f0999"), lambda: expect(rows(page)).to_have_count(10)
        ),
    }
    print(f"10,000 files: loaded in {load_s:.1f} s; " + ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items()))
    # The search includes its 150 ms debounce; a slow shared CI machine gets room.
    assert all(v < 1.5 for v in timings.values()), timings
    assert load_s < 30, load_s
