"""Fixtures of the maintainer page's browser tests: the stack, a headless Debian Chromium driven
by Playwright (never a browser download), decks seeded through the API, and a page per test that
fails the test on any Content-Security-Policy violation, script dialog or page error."""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from stack import REPO, Stack, read_env

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As the machine's probe starts it: no sandbox as root, and no background traffic to hosts a
# closed network refuses.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--mute-audio",
]

# What the decks hold: corpus files by name, under the filenames the notes use.
IMAGES = {
    "rocket.jpg": "rocket.jpg",
    "grace_hopper.jpg": "grace_hopper.jpg",
    "spacefun-earth.png": "spacefun-earth.png",
    "text.png": "text.png",
    "tiny.gif": "no_time_for_that_tiny.gif",
    # Names Anki allows that look like markup: if any reached the page as HTML, an element
    # would appear or a script would run.
    "&lt;img src=x onerror=alert(1)&gt;.png": "page.png",
    "x' onerror='window.__xss=1' data-x='.png": "Minduka_Present_Blue_Pack.png",
    "Tom & Jerry = café.png": "camera.png",
}
AUDIO = {"bell.oga": "bell.oga", "speech.mp3": "tts-1-0.mp3"}
MARKUP_NAMES = [n for n in IMAGES if any(c in n for c in "&'=")]
MISSING = "never-uploaded.png"
# Bytes for the files tests remove (each test gets a deck of its own).
SPARE = {"remove-me.png": "lines-sddm-preview.jpg", "keep.png": "text.png"}


@pytest.fixture(scope="session")
def stack() -> Stack:
    return Stack(read_env())


@pytest.fixture(scope="session")
def corpus_bytes(stack: Stack) -> Callable[[str], bytes]:
    cache: dict[str, bytes] = {}

    def get(name: str) -> bytes:
        if name not in cache:
            cache[name] = (stack.corpus / "real" / name).read_bytes()
        return cache[name]

    return get


_decks = itertools.count()


@pytest.fixture(scope="session")
def new_deck(stack: Stack, corpus_bytes: Callable[[str], bytes]) -> Callable[..., str]:
    """new_deck({note: {filename: corpus file or None}}) → a fresh deck id, seeded through the API."""
    run = f"{int(time.time()) % 100000}-{os.getpid() % 1000}"

    def make(notes: dict[str, dict[str, str | None]], prefix: str = "bt") -> str:
        deck = f"{prefix}-{run}-{next(_decks)}"
        stack.seed(
            deck,
            {
                f"{deck}-{nid}": {f: (None if src is None else corpus_bytes(src)) for f, src in media.items()}
                for nid, media in notes.items()
            },
        )
        return deck

    return make


@pytest.fixture(scope="session")
def main_deck(new_deck: Callable[..., str]) -> str:
    """The deck most tests only look at: every image and audio file, one of them in three notes,
    and one file that notes use but nobody uploaded."""
    files = {**IMAGES, **AUDIO}
    notes: dict[str, dict[str, str | None]] = {f"n{i}": {name: src} for i, (name, src) in enumerate(files.items())}
    notes["n-shared-1"] = {"rocket.jpg": IMAGES["rocket.jpg"], "bell.oga": AUDIO["bell.oga"]}
    notes["n-shared-2"] = {"rocket.jpg": IMAGES["rocket.jpg"]}
    notes["n-missing"] = {MISSING: None}
    return new_deck(notes, prefix="main")


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: scripts/test-browser installs Debian's chromium")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


WATCH = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__violations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    p = context.new_page()
    p.add_init_script(WATCH)
    problems: list[str] = []
    p.on("dialog", lambda d: (problems.append(f"script dialog: {d.message}"), d.dismiss()))
    p.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    p.set_default_timeout(15_000)
    yield p
    violations: list[Any] = []
    for frame in p.frames:
        # A frame the browser refused to load (frame-ancestors) has nothing to say.
        with contextlib.suppress(Exception):
            violations += frame.evaluate("window.__violations || []")
    context.close()
    assert not problems, problems
    assert not violations, f"CSP violations: {violations}"


@pytest.fixture(scope="session")
def artifacts() -> Path:
    d = REPO / ".local" / "browser"
    d.mkdir(parents=True, exist_ok=True)
    return d
