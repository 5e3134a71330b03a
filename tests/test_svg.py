"""The report's SVG charts: well-formed, one dot per night, the band where runs were given."""

from __future__ import annotations

from xml.etree import ElementTree

from baker.nightly.svg import Point, chart

NS = "{http://www.w3.org/2000/svg}"


def test_a_series_with_its_band() -> None:
    svg = ElementTree.fromstring(
        chart(
            "boot <time>",
            " s",
            [Point("n1", 15, 14, 16), Point("n2", 16, 15.5, 17), Point("n3", 15.5, 15, 16)],
        )
    )
    assert svg.find(f"{NS}title").text == "boot <time>"  # type: ignore[union-attr]
    assert len(svg.findall(f"{NS}circle")) == 3
    series = svg.find(f"{NS}polyline").get("points").split()  # type: ignore[union-attr]
    band = svg.find(f"{NS}polygon").get("points").split()  # type: ignore[union-attr]
    assert len(series) == 3 and len(band) == 6
    # Higher values are drawn higher (smaller y); the band's top is above its bottom.
    ys = [float(p.split(",")[1]) for p in series]
    assert ys[1] < ys[2] < ys[0]
    assert float(band[0].split(",")[1]) < float(band[-1].split(",")[1])


def test_one_point_and_no_points_still_draw() -> None:
    one = ElementTree.fromstring(chart("size", " MB", [Point("n1", 400)]))
    assert len(one.findall(f"{NS}circle")) == 1 and one.find(f"{NS}polygon") is None
    empty = ElementTree.fromstring(chart("size", " MB", []))
    assert "no data yet" in (empty.find(f"{NS}text").text or "")  # type: ignore[union-attr]
