"""The HoldRepository contract (tx.holds) for every backend.

The in-memory fake is what the unit tests trust, so it must behave like the databases do: every test
here runs the same calls on each backend (tests/contract/conftest.py) and expects the very same answers.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

import pytest

from tests.contract.builders import HOUR, T0, Uow, balances, c, credit, live_lots, place, settle
from wallet_core.errors import NotFound
from wallet_core.holds import Hold, HoldStatus
from wallet_core.ledger import CreditKind, TransactionKind
from wallet_core.money import Credits


# -- holds -----------------------------------------------------------------------------------------
def test_a_hold_round_trips_with_its_allocations_in_order(uow: Uow) -> None:
    hold = Hold(
        id="hold_1",
        user_id="alice",
        amount=Credits(600),
        status=HoldStatus.OPEN,
        created_at=T0,
        expires_at=T0 + HOUR,
        allocations=(("lot_z", Credits(100)), ("lot_a", Credits(200)), ("lot_m", Credits(300))),
        reference_id="hold:k1",
        reason="a render job",
    )
    bare = Hold(
        id="hold_2",
        user_id="bob",
        amount=Credits(5),
        status=HoldStatus.OPEN,
        created_at=T0,
        expires_at=T0 + HOUR,
        allocations=(("lot_b", Credits(5)),),
        reference_id="hold:k2",
    )
    with uow() as tx:
        tx.holds.add(hold)
        tx.holds.add(bare)
        tx.commit()
    with uow() as tx:
        assert tx.holds.get("hold_1") == hold
        assert tx.holds.get("hold_2") == bare
        assert tx.holds.get("hold_3") is None


def test_update_hold_persists_and_an_unknown_hold_is_not_found(uow: Uow) -> None:
    with uow() as tx:
        tx.ledger.record(credit(credits=1000))
        hold = place(tx, "alice", 300)
        tx.commit()
    with uow() as tx:
        tx.holds.update(hold.id, HoldStatus.CAPTURED, Credits(120), T0)
        with pytest.raises(NotFound):
            tx.holds.update("hold_404", HoldStatus.RELEASED, Credits(0), T0)
        tx.commit()
    with uow() as tx:
        assert tx.holds.get(hold.id) == replace(hold, status=HoldStatus.CAPTURED, captured=Credits(120))
        tx.holds.update(hold.id, HoldStatus.RELEASED, Credits(0), T0)  # not committed
    with uow() as tx:
        found = tx.holds.get(hold.id)
    assert found is not None and found.status is HoldStatus.CAPTURED


def test_hold_and_capture_move_the_held_balance_and_the_lots(uow: Uow) -> None:
    promo = credit(credits=200, expires_at=T0 + 48 * HOUR)
    paid = credit(credits=1000, kind=CreditKind.PAID)
    promo_lot, paid_lot = promo.new_lots[0].id, paid.new_lots[0].id
    with uow() as tx:
        tx.ledger.record(promo)
        tx.ledger.record(paid)
        hold = place(tx, "alice", 500)
        tx.commit()
    assert hold.allocations == ((promo_lot, Credits(200)), (paid_lot, Credits(300)))
    assert balances(uow) == c(700, 500)
    assert live_lots(uow) == {promo_lot: (0, 200), paid_lot: (700, 300)}
    with uow() as tx:
        held = tx.ledger.find_transaction_by_reference(hold.reference_id)
        assert held is not None
        assert (held.kind, held.credits, held.held_change, held.balance_after, held.hold_id) == (
            TransactionKind.HOLD,
            Credits(-500),
            Credits(500),
            Credits(700),
            hold.id,
        )
        assert tx.holds.get(hold.id) == hold
        captured = settle(tx, hold, 250)
        tx.commit()
    # 250 captured in the hold's lot order (all 200 promotional, 50 paid); 250 paid go back
    assert (captured.kind, captured.credits, captured.held_change, captured.balance_after, captured.hold_id) == (
        TransactionKind.CAPTURE,
        Credits(250),
        Credits(-500),
        Credits(950),
        hold.id,
    )
    assert balances(uow) == c(950, 0)
    assert live_lots(uow) == {paid_lot: (950, 0)}
    with uow() as tx:
        found = tx.holds.get(hold.id)
    assert found == replace(hold, status=HoldStatus.CAPTURED, captured=Credits(250))


def test_expired_open_holds_are_ordered_by_expiry_then_id_and_limited(uow: Uow) -> None:
    def hold(hold_id: str, expires: datetime, status: HoldStatus = HoldStatus.OPEN) -> Hold:
        return Hold(
            id=hold_id,
            user_id="alice",
            amount=Credits(30),
            status=status,
            created_at=T0 - HOUR,
            expires_at=expires,
            allocations=(("lot_2", Credits(10)), ("lot_1", Credits(20))),
            reference_id=f"hold:{hold_id}",
        )

    due = [hold("hold_b", T0 - HOUR), hold("hold_B", T0), hold("hold_a", T0), hold("hold_c", T0 - 2 * HOUR)]
    with uow() as tx:
        for h in [
            *due,
            hold("hold_later", T0 + HOUR),
            hold("hold_done", T0 - HOUR, HoldStatus.CAPTURED),
            hold("hold_gone", T0 - HOUR, HoldStatus.EXPIRED),
        ]:
            tx.holds.add(h)
        tx.commit()
    with uow() as tx:
        assert tx.holds.expired_open(T0, 100) == [due[3], due[0], due[1], due[2]]
        assert tx.holds.expired_open(T0, 2) == [due[3], due[0]]
        assert tx.holds.expired_open(T0 - 3 * HOUR, 100) == []
