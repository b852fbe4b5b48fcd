"""Links to the console and the widget for a try-out (``copilot.live.links``, what ``make demo`` prints)."""

from __future__ import annotations

import pytest

from copilot.live.links import pilot_links


def test_pilot_links_put_the_credentials_in_the_fragment() -> None:
    links = pilot_links("http://127.0.0.1:8080/", "agent tok/+", "cust-tok", "conv:1")
    assert links.console == "http://127.0.0.1:8080/console/#token=agent%20tok%2F%2B"
    assert links.widget == "http://127.0.0.1:8080/widget/#token=cust-tok&conversation=conv%3A1"
    assert str(links).splitlines() == [f"agent console:   {links.console}", f"customer widget: {links.widget}"]
    assert pilot_links("https://pilot.example", "a", "c").widget == "https://pilot.example/widget/#token=c"
    for bad in ("127.0.0.1:8080", "ftp://host", ""):
        with pytest.raises(ValueError, match="http"):
            pilot_links(bad, "a", "c")
    with pytest.raises(ValueError, match="token"):
        pilot_links("http://h", " ", "c")
