"""A marketer in Debian's Chromium: charts match the seeded dataset, models move the split but
not the total, and the CSV export holds the figures on screen."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterator
from typing import Any

import pytest
from support.app import BACKENDS, LiveServer, make_settings
from test_reports import NOW, PASSWORD, Seed, seed_reports

from dashboard.app import create_app
from tracker import appkeys
from tracker.clock import FrozenClock

pytestmark = pytest.mark.browser
PERIOD = "from=2026-01-05&to=2026-01-11"


class Dashboard:
    def __init__(self, database_url: str) -> None:
        app = create_app(make_settings(database_url), clock=FrozenClock(NOW))
        app[appkeys.EXTRAS]["workers_disabled"] = {"webhooks", "reports"}
        self.server = LiveServer(app).start()
        self.seed: Seed = self.server.call(seed_reports(app[appkeys.DATABASE]))

    def close(self) -> None:
        self.server.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def dashboard(request: pytest.FixtureRequest) -> Iterator[Dashboard]:
    instance = Dashboard(str(request.getfixturevalue(f"{request.param}_url")))
    yield instance
    instance.close()


def chart_values(page: Any, canvas: str) -> list[float]:
    values: list[float] = page.evaluate(
        "id => Chart.getChart(document.getElementById(id)).data.datasets[0].data", canvas
    )
    return values


def split(page: Any) -> dict[str, float]:
    labels: list[str] = page.evaluate(
        "() => Chart.getChart(document.getElementById('split-chart')).data.labels"
    )
    return dict(zip(labels, chart_values(page, "split-chart"), strict=True))


def screen_table(page: Any) -> dict[str, str]:
    """Map each row of the breakdown table to the calls figure shown."""
    rows: list[list[str]] = page.eval_on_selector_all(
        "#breakdown tbody tr",
        "rows => rows.map(r => [r.dataset.value, r.querySelector('td').textContent.trim()])",
    )
    return dict((value, text) for value, text in rows)


def test_marketer_reads_models_and_exports(browser: Any, dashboard: Dashboard) -> None:
    context = browser.new_context(viewport={"width": 1360, "height": 900}, locale="en-GB")
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{dashboard.server.url}/login")
    page.fill("input[name=email]", dashboard.seed.users["marketer"])
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard")

    page.goto(f"{dashboard.server.url}/dashboard?{PERIOD}")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('heatmap-chart'))"
    )
    # The seeded dataset: 5 calls in the week (3 on 8–10 January), 1 in the week before.
    series = chart_values(page, "series-chart")
    assert sum(series) == 5 and series == [0, 0, 0, 1, 2, 2, 0]
    assert sum(chart_values(page, "series-chart")) == float(
        page.inner_text("[data-kpi=calls] .figure")
    )
    heat = page.evaluate(
        "() => Chart.getChart(document.getElementById('heatmap-chart')).data.datasets[0].data.reduce((s, c) => s + c.v, 0)"
    )
    assert heat == 5
    last_touch = split(page)
    assert last_touch == {"Paid Search": 2, "Email": 1, "Organic Social": 1, "(unattributed)": 1}
    assert page.inner_text("#breakdown tfoot td[data-total]") == "5"
    page.screenshot(path="/tmp/reports.png", full_page=True)

    page.select_option("#model", "linear")
    page.wait_for_url("**model=linear**")
    page.wait_for_function(
        "() => window.Chart && Chart.getChart(document.getElementById('split-chart'))"
    )
    linear = split(page)
    assert linear != last_touch
    assert linear["Paid Search"] == pytest.approx(1.333) and linear[
        "Organic Search"
    ] == pytest.approx(0.334)
    assert math.isclose(sum(linear.values()), 5)
    assert page.inner_text("#breakdown tfoot td[data-total]") == "5"
    assert sum(chart_values(page, "series-chart")) == 5

    shown = screen_table(page)
    href = page.get_attribute("#export-table", "href")
    assert href is not None and "model=linear" in href
    exported = page.request.get(f"{dashboard.server.url}{href}")
    assert exported.status == 200
    table = list(csv.reader(io.StringIO(exported.text().lstrip("\ufeff"))))
    by_value = {row[0]: row[1] for row in table[1:]}
    assert by_value.pop("Total") == "5.0"
    assert {value: float(text) for value, text in by_value.items()} == {
        value: float(text) for value, text in shown.items()
    }
    assert math.isclose(sum(float(v) for v in by_value.values()), 5)

    page.click("#breakdown tr[data-value='Paid Search'] td a")
    page.wait_for_url("**/dashboard/calls?**")
    assert page.locator("#calls tbody tr").count() == 2
    page.screenshot(path="/tmp/reports-calls.png", full_page=True)
    page.locator("#calls tbody tr a").last.click()
    page.wait_for_url("**/dashboard/calls/*")
    assert page.locator(".journey .touch").count() == 3
    assert "+33 6 •• •• •• 78" in page.inner_text(".facts")
    page.screenshot(path="/tmp/reports-call.png", full_page=True)
    assert not errors
    context.close()
