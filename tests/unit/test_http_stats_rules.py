"""``GET …/moh/stats`` (ooma_moh/http/stats.py) on the in-memory catalog: every day of the window
answered, zeros included, the total, who may read, what ``days`` may be, and the read done in the
catalog thread. The SQL catalogs' own reads are proved by the catalog contract tests."""

from __future__ import annotations

import threading
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ooma_moh.holdstats import KEYS, HoldDay
from ooma_moh.http.tokens import create_token
from tests.unit.test_http_api_rules import NOW, World, bearer

URL = "/api/v1/tenants/{}/moh/stats"


def held(day: date, *lengths: float, hung_up: int = 0, fallback: int = 0) -> HoldDay:
    """A day with one hold of each of ``lengths`` seconds, the first ``hung_up`` of them hung up
    and the first ``fallback`` of them fallbacks."""
    figures = HoldDay(day)
    for i, seconds in enumerate(lengths):
        figures.count(seconds, hung_up=i < hung_up, fallback=i < fallback)
    return figures


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def seed(world: World) -> dict[date, HoldDay]:
    """acme's holds today, yesterday, 29 and 30 days ago; beta's today (never acme's)."""
    today = datetime.now(UTC).date()
    days = {
        today: held(today, 10.0, 20.0, 30.5, hung_up=1),
        today - timedelta(days=1): held(today - timedelta(days=1), 65.0, fallback=1),
        today - timedelta(days=29): held(today - timedelta(days=29), 3.0, 4.0),
        today - timedelta(days=30): held(today - timedelta(days=30), 500.0),
    }
    world.catalog.add_hold_days([("acme", d) for d in days.values()])
    world.catalog.add_hold_days([("beta", held(today, 1.0, 2.0, 3.0, 4.0, hung_up=4))])
    return days


def window_total(seeded: dict[date, HoldDay], first: date, last: date) -> dict[str, object]:
    total = HoldDay(first)
    for day, figures in seeded.items():
        if first <= day <= last:
            total.add(figures)
    return total.figures()


async def stats(client: TestClient[Any, Any], secret: str, query: str = "", tenant: str = "acme") -> Any:
    response = await client.get(URL.format(tenant) + query, headers=bearer(secret))
    return response.status, await response.json()


def test_thirty_days_by_default_every_day_answered_with_the_total(world: World) -> None:
    seeded = seed(world)

    async def scenario(client: TestClient[Any, Any]) -> None:
        status, body = await stats(client, world.acme)
        assert status == 200
        days = body["days"]
        first, last = date.fromisoformat(days[0]["date"]), date.fromisoformat(days[-1]["date"])
        assert len(days) == 30 and last - first == timedelta(days=29)
        assert last >= datetime.now(UTC).date() - timedelta(days=1)  # today (UTC), unless midnight passed
        assert [date.fromisoformat(d["date"]) for d in days] == [first + timedelta(days=i) for i in range(30)]
        for answered in days:
            stored = seeded.get(date.fromisoformat(answered["date"]), HoldDay(first))
            assert answered == {"date": answered["date"], **stored.figures()}, answered
        assert list(days[0]) == ["date", *KEYS] and list(body["total"]) == list(KEYS)
        assert body["total"] == window_total(seeded, first, last)
        assert body["total"]["holds"] == 6 and body["total"]["hung_up"] == 1 and body["total"]["fallback"] == 1
        zero = next(d for d in days if date.fromisoformat(d["date"]) not in seeded)
        assert zero == {"date": zero["date"], "holds": 0, "seconds": 0, "median_s": 0.0, "p90_s": 0.0,
                        "hung_up": 0, "fallback": 0}  # fmt: skip

    world.run(scenario)


def test_days_from_one_to_four_hundred(world: World) -> None:
    seeded = seed(world)

    async def scenario(client: TestClient[Any, Any]) -> None:
        status, one = await stats(client, world.acme, "?days=1")
        assert status == 200 and len(one["days"]) == 1
        assert one["days"][0]["date"] == one["days"][-1]["date"]
        status, year = await stats(client, world.acme, "?days=400")
        assert status == 200 and len(year["days"]) == 400
        first, last = (date.fromisoformat(year["days"][i]["date"]) for i in (0, -1))
        assert year["total"] == window_total(seeded, first, last) and year["total"]["holds"] == 7

    world.run(scenario)


@pytest.mark.parametrize("query", ["0", "401", "-1", "+5", "1.5", "", "thirty", "٣", "1e2", " 30", "99999999999"])
def test_any_other_days_is_400_invalid_days(world: World, query: str) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        status, body = await stats(client, world.acme, f"?days={query}")
        assert (status, body["error"]["code"]) == (400, "invalid_days"), query
        assert "1 to 400" in body["error"]["message"]

    world.run(scenario)


def test_days_given_twice_is_400(world: World) -> None:
    async def scenario(client: TestClient[Any, Any]) -> None:
        status, body = await stats(client, world.acme, "?days=7&days=30")
        assert (status, body["error"]["code"]) == (400, "invalid_days")

    world.run(scenario)


def test_only_the_tenants_own_figures_and_only_for_whom_may_see_them(world: World) -> None:
    seed(world)
    _, operator = create_token(world.catalog, tenant_id=None, now=NOW)

    async def scenario(client: TestClient[Any, Any]) -> None:
        status, body = await stats(client, world.beta, "?days=7", tenant="acme")
        assert (status, body["error"]["code"]) == (404, "not_found")  # as for a tenant that does not exist
        status, body = await stats(client, world.beta, "?days=bogus", tenant="acme")
        assert status == 404, "who may see comes before what is asked"
        nobody = await client.get(URL.format("acme"))
        assert nobody.status == 401
        status, beta = await stats(client, world.beta, tenant="beta")
        assert status == 200 and beta["total"]["holds"] == 4 and beta["total"]["hung_up"] == 4
        status, acme = await stats(client, operator)
        assert status == 200 and acme["total"]["holds"] == 6
        status, nobody_holds = await stats(client, operator, tenant="gamma")
        assert status == 200 and nobody_holds["total"]["holds"] == 0 and len(nobody_holds["days"]) == 30

    world.run(scenario)


def test_the_catalog_is_read_in_the_catalog_thread(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    seed(world)
    threads: list[str] = []
    read = world.catalog.hold_days

    def recorded(tenant_id: str, first: date, last: date) -> list[HoldDay]:
        threads.append(threading.current_thread().name)
        return read(tenant_id, first, last)

    monkeypatch.setattr(world.catalog, "hold_days", recorded)

    async def scenario(client: TestClient[Any, Any]) -> None:
        status, body = await stats(client, world.acme)
        assert status == 200 and body["total"]["holds"] == 6

    world.run(scenario)
    assert len(threads) == 1 and threads[0].startswith("ooma-moh-catalog"), threads
