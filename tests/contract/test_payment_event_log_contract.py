"""The PaymentEventLog contract (tx.events) for every backend.

The in-memory fake is what the unit tests trust, so it must behave like the databases do: every test
here runs the same calls on each backend (tests/contract/conftest.py) and expects the very same answers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta, timezone

import pytest
from sqlalchemy import Engine

from tests.contract.builders import HOUR, T0, Uow, balances, c, credit, event, top_up


def test_events_are_stored_found_and_listed_oldest_first_per_payment_intent(uow: Uow) -> None:
    plus_two = timezone(timedelta(hours=2))
    # (seconds after T0, id): ties on the time are broken by id, in code point order
    mine = [
        event("evt_late", at=T0 + 3 * HOUR, kind="charge.refunded", outcome="refunded", source="reconcile"),
        event("evt_b", at=T0 + HOUR),
        event("evt_B", at=(T0 + HOUR).astimezone(plus_two)),
        event("evt_a-", at=T0 + HOUR),
        event("evt_first", at=T0, kind="payment_intent.payment_failed", outcome="failed"),
    ]
    others = [
        event("evt_other", "pi_2", at=T0 - HOUR, top_up_id="tu_2"),
        event("evt_none", None, top_up_id=None, kind="customer.created", outcome="ignored"),
    ]
    with uow() as tx:
        assert tx.events.find("evt_b") is None
        assert tx.events.for_payment_intent("pi_1") == []
        for e in [*mine, *others]:
            tx.events.add(e)
        assert tx.events.find("evt_b") == mine[1]  # seen inside the unit of work
        tx.commit()
    with uow() as tx:
        for e in [*mine, *others]:
            assert tx.events.find(e.event_id) == e
        found = tx.events.find("evt_B")
        assert tx.events.find("evt_404") is None
        assert tx.events.find("EVT_B") is None  # ids are case-sensitive
        listed = tx.events.for_payment_intent("pi_1")
        assert tx.events.for_payment_intent("pi_2") == [others[0]]
        assert tx.events.for_payment_intent("pi_404") == []
    assert [e.event_id for e in listed] == ["evt_first", "evt_B", "evt_a-", "evt_b", "evt_late"]
    assert listed[-1] == mine[0] and listed[-1].source == "reconcile"
    assert found is not None and found.received_at == T0 + HOUR and found.received_at.utcoffset() is not None


def test_an_event_and_its_top_up_are_found_in_one_read(uow: Uow) -> None:
    logged = event("evt_1", outcome="granted")
    with uow() as tx:
        assert tx.events.find_with_top_up("evt_1", "pi_1") == (None, None)
        tx.top_ups.add(top_up())
        tx.top_ups.add(top_up("tu_2", intent="pi_2", key="key-2"))
        tx.events.add(logged)
        tx.commit()
    with uow() as tx:
        assert tx.events.find_with_top_up("evt_1", "pi_1") == (logged, top_up())
        assert tx.events.find_with_top_up("evt_1", "pi_2")[1] == tx.top_ups.find_by_payment_intent("pi_2")
        assert tx.events.find_with_top_up("evt_new", "pi_1") == (None, top_up())  # a new event
        assert tx.events.find_with_top_up("evt_1", None) == (logged, None)  # an event about no payment
        assert tx.events.find_with_top_up("evt_1", "pi_404") == (logged, None)


def test_an_event_log_write_the_database_refuses_commits_nothing_of_the_unit_of_work(
    uow: Uow, sql_engine: Engine
) -> None:
    # The event log's insert may travel with the COMMIT (PostgreSQL): refused, it must stop the commit.
    refused = replace(event("evt_1", outcome="granted"), outcome=None)  # type: ignore[arg-type]  # NOT NULL
    with pytest.raises(Exception), uow() as tx:  # the driver's IntegrityError, or SQLAlchemy's
        tx.ledger.record(credit(credits=100, reference="with-the-event"))
        tx.events.add(refused)
        tx.commit()
    assert balances(uow) == c(0, 0)
    with uow() as tx:
        assert tx.ledger.find_transaction_by_reference("with-the-event") is None
        assert tx.events.find("evt_1") is None


def test_a_second_event_with_the_same_id_is_ignored_and_the_unit_of_work_still_commits(uow: Uow) -> None:
    first = event("evt_1", outcome="granted")
    with uow() as tx:
        tx.ledger.record(credit(credits=100, reference="before"))
        tx.events.add(first)
        tx.events.add(replace(first, outcome="duplicate", received_at=T0 + HOUR))  # no error
        tx.top_ups.add(top_up())  # the unit of work is still usable
        tx.events.add(event("evt_2", at=T0 + HOUR))
        tx.ledger.record(credit(credits=50, reference="after"))
        assert tx.events.find("evt_1") == first
        tx.commit()
    with uow() as tx:
        tx.events.add(replace(first, outcome="again", source="reconcile"))  # in a later unit of work too
        tx.ledger.record(credit(credits=7, reference="later"))
        tx.commit()
    with uow() as tx:
        assert tx.events.find("evt_1") == first
        assert [e.event_id for e in tx.events.for_payment_intent("pi_1")] == ["evt_1", "evt_2"]
        assert tx.top_ups.get("tu_1") == top_up()
        assert tx.ledger.balances("alice", T0) == c(157, 0)
        for reference in ("before", "after", "later"):
            assert tx.ledger.find_transaction_by_reference(reference) is not None
