"""The Outbox contract (tx.outbox) for every backend: events written with the unit of work that adds
them (and only if it commits), numbered once committed, in the order they committed, and paged by
number. The in-memory fake is what the unit tests trust: every test runs the same calls on each backend
(tests/contract/conftest.py) and expects the very same answers."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import Engine

from tests.contract.builders import HOUR, T0, Uow, balances, c, credit
from wallet_core.event_types import EventType
from wallet_core.ids import new_id
from wallet_core.outbound_events import WalletEvent


def told(
    type_: EventType = EventType.CREDITS_SPENT, user: str = "alice", *, at: datetime = T0, **data: object
) -> WalletEvent:
    return WalletEvent(new_id("evt"), type_, at, user, {"balance": "10.00", **data})


def published(uow: Uow, limit: int = 100) -> list[tuple[int, WalletEvent]]:
    with uow() as tx:
        numbered = tx.outbox.publish(limit)
        tx.commit()
    return numbered


def page(uow: Uow, after: int = 0, limit: int = 100, **filters: str) -> list[tuple[int, WalletEvent]]:
    with uow(read_only=True) as tx:
        return tx.outbox.page(after, limit, **filters)


def test_committed_events_are_numbered_once_in_the_order_they_committed(uow: Uow) -> None:
    plus_two = timezone(timedelta(hours=2))
    first = [
        told(
            EventType.CREDITS_GRANTED, metadata={"order": "42", "note": "100% 'crème' \\ brûlée ✓ %(x)s"}, reverts=None
        ),
        told(EventType.BALANCE_LOW, at=(T0 + HOUR).astimezone(plus_two), low_balance_credits="5.00"),
    ]
    second = told(EventType.HOLD_CREATED, "bob", hold_id="hold_1")
    with uow() as tx:
        for event in first:
            tx.outbox.add(event)
        tx.commit()
    with uow() as tx:
        tx.outbox.add(second)
        tx.commit()

    assert page(uow) == []  # not numbered yet: a pull asks for a publish first
    assert published(uow) == [(1, first[0]), (2, first[1]), (3, second)]
    assert published(uow) == []  # each event is numbered once
    assert page(uow) == [(1, first[0]), (2, first[1]), (3, second)]
    assert page(uow, after=1, limit=1) == [(2, first[1])]
    assert page(uow, after=3) == []
    with uow(read_only=True) as tx:
        found = tx.outbox.get(first[1].id)
        assert tx.outbox.get("evt_404") is None
    assert found == first[1]
    assert found.created_at == T0 + HOUR and found.created_at.utcoffset() is not None
    assert found.body()["data"] == {"balance": "10.00", "low_balance_credits": "5.00"}


def test_publishing_numbers_at_most_the_limit_and_goes_on_from_the_last_number(uow: Uow) -> None:
    events = [told(at=T0 + n * HOUR) for n in range(5)]
    with uow() as tx:
        for event in events:
            tx.outbox.add(event)
        tx.commit()
    assert published(uow, limit=2) == [(1, events[0]), (2, events[1])]
    assert page(uow) == [(1, events[0]), (2, events[1])]
    later = told()
    with uow() as tx:
        tx.outbox.add(later)
        tx.commit()
    assert published(uow, limit=10) == [(3, events[2]), (4, events[3]), (5, events[4]), (6, later)]
    assert [n for n, _ in page(uow)] == [1, 2, 3, 4, 5, 6]


def test_a_publish_that_rolls_back_gives_no_number_away(uow: Uow) -> None:
    events = [told(), told()]
    with uow() as tx:
        for event in events:
            tx.outbox.add(event)
        tx.commit()
    with uow() as tx:
        assert [n for n, _ in tx.outbox.publish(10)] == [1, 2]
        tx.rollback()
    with uow() as tx:
        assert [n for n, _ in tx.outbox.publish(1)] == [1]
        # left without commit: undone too
    assert published(uow) == [(1, events[0]), (2, events[1])]


def test_an_event_is_written_only_if_its_unit_of_work_commits(uow: Uow) -> None:
    kept, undone, abandoned, after_commit = told(), told(), told(), told()
    with uow() as tx:
        tx.outbox.add(undone)
        assert tx.outbox.get(undone.id) == undone  # seen inside the unit of work
        tx.ledger.record(credit(credits=100, reference="with-the-undone-event"))
        tx.rollback()
        assert tx.outbox.get(undone.id) is None
        tx.outbox.add(kept)
        tx.commit()
        tx.outbox.add(after_commit)  # the unit of work goes on: the next commit writes it
        tx.commit()
    with uow() as tx:
        tx.outbox.add(abandoned)  # left without commit
    with uow(read_only=True) as tx:
        assert tx.outbox.get(kept.id) == kept
        assert tx.outbox.get(after_commit.id) == after_commit
        assert tx.outbox.get(undone.id) is None
        assert tx.outbox.get(abandoned.id) is None
    assert published(uow) == [(1, kept), (2, after_commit)]
    assert balances(uow) == c(0, 0)


def test_pages_filter_by_type_and_user(uow: Uow) -> None:
    events = [
        told(EventType.CREDITS_GRANTED, "alice"),
        told(EventType.CREDITS_SPENT, "alice"),
        told(EventType.CREDITS_SPENT, "bob"),
        told(EventType.CREDITS_GRANTED, "bob"),
        told(EventType.CREDITS_SPENT, "alice"),
        told(EventType.CREDITS_SPENT, "Alice"),  # user ids are case-sensitive
    ]
    with uow() as tx:
        for event in events:
            tx.outbox.add(event)
        tx.commit()
    published(uow)
    spent = EventType.CREDITS_SPENT.value
    assert page(uow, type=spent) == [(2, events[1]), (3, events[2]), (5, events[4]), (6, events[5])]
    assert page(uow, user_id="alice") == [(1, events[0]), (2, events[1]), (5, events[4])]
    assert page(uow, type=spent, user_id="alice") == [(2, events[1]), (5, events[4])]
    assert page(uow, after=2, limit=1, type=spent, user_id="alice") == [(5, events[4])]
    assert page(uow, after=2, limit=1, user_id="bob") == [(3, events[2])]
    assert page(uow, type=EventType.DEPLETED.value) == []
    assert page(uow, user_id="carol") == []


def test_events_of_a_commit_the_database_refuses_are_not_written_nor_is_the_change(
    uow: Uow, sql_engine: Engine
) -> None:
    # The events go in with one INSERT just before COMMIT: refused (an id used already), it must stop the
    # commit, so there is never a change without its event.
    first = told()
    with uow() as tx:
        tx.outbox.add(first)
        tx.commit()
    with pytest.raises(Exception), uow() as tx:  # the driver's IntegrityError
        tx.ledger.record(credit(credits=100, reference="with-a-refused-event"))
        tx.outbox.add(told())
        tx.outbox.add(WalletEvent(first.id, EventType.CREDITS_GRANTED, T0, "alice", {}))
        tx.commit()
    assert balances(uow) == c(0, 0)
    assert published(uow) == [(1, first)]
