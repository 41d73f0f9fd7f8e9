"""Hostile message content the transcript browser must show as inert text, and a checker
that reads a page the way a browser would."""

from __future__ import annotations

from html.parser import HTMLParser

SCRIPT = "<script>alert('xss')</script>"
IMG = '<img src=x onerror="alert(1)">'
FORGED = "</pre></article><h1>Signed in as admin</h1><form action='https://evil.example'>"
ANSI = "\x1b[31mred\x1b[0m \x1b]0;retitled\x07 \u202eevil"
#: A megabyte of output, with markup at its very end (past any preview).
MEGABYTE = "A" * 1_000_000 + SCRIPT

HOSTILE_TEXTS = (SCRIPT, IMG, FORGED, ANSI)


class PageShape(HTMLParser):
    """The elements and attributes of a page, as a browser would build them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        #: Start and end tags in order (an end tag as ``("/name", {})``).
        self.nested: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        entry = (tag, dict(attrs))
        self.tags.append(entry)
        self.nested.append(entry)

    def handle_endtag(self, tag: str) -> None:
        self.nested.append((f"/{tag}", {}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def page_shape(html: str) -> PageShape:
    shape = PageShape()
    shape.feed(html)
    shape.close()
    return shape


def assert_inert(html: str) -> None:
    """No element the content could have made: scripts only the UI's own, no images, no
    event-handler attributes, no forms posting elsewhere, one h1, no raw control characters."""
    shape = page_shape(html)
    for tag, attrs in shape.tags:
        assert not any(name.startswith("on") for name in attrs), (tag, attrs)
        if tag == "script":
            assert (attrs.get("src") or "").endswith("/static/app.js"), attrs
        assert tag != "img", attrs
        if tag == "form":
            assert (attrs.get("action") or "").startswith("/"), attrs
    assert [tag for tag, _ in shape.tags].count("h1") == 1
    assert "\x1b" not in html
    assert "\u202e" not in html
    assert "\x07" not in html


def assert_labelled(html: str) -> None:
    """Every field a person fills in has a label naming it (``<label for=...>``, or the field
    inside its label), and the page declares its language and a viewport for phones."""
    shape = page_shape(html)
    labels = {attrs.get("for") for tag, attrs in shape.tags if tag == "label"}
    depth, inside = 0, set()
    # A field inside a <label> is labelled by it: find those by nesting.
    for tag, attrs in shape.nested:
        if tag == "label":
            depth += 1
        elif tag == "/label":
            depth -= 1
        elif tag in ("input", "select", "textarea") and depth:
            inside.add(id(attrs))
    for tag, attrs in shape.tags:
        if tag in ("input", "select", "textarea") and attrs.get("type") != "hidden":
            assert attrs.get("id") in labels or id(attrs) in inside, (tag, attrs)
    assert ("html", {"lang": "en"}) in shape.tags
    assert any(tag == "meta" and attrs.get("name") == "viewport" for tag, attrs in shape.tags)
