"""The WebhookEndpoints and WebhookDeliveries contracts (tx.endpoints, tx.deliveries) for every backend:
endpoints with their secrets, and deliveries claimed with a lease so that each is attempted by one
worker at a time."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from tests.contract.builders import HOUR, T0, Uow
from wallet_core.errors import NotFound
from wallet_core.webhooks_out import Delivery, DeliveryStatus, WebhookEndpoint, new_delivery

MINUTE = timedelta(minutes=1)
LEASE = timedelta(minutes=1)


def endpoint(endpoint_id: str, *, at: str = "0", events: tuple[str, ...] = ("*",)) -> WebhookEndpoint:
    return WebhookEndpoint(
        id=endpoint_id,
        url=f"https://hooks.example.com/{endpoint_id}?x=1",
        events=events,
        created_at=T0 + int(at) * MINUTE,
        secret=f"whsec_{endpoint_id}",
        description=None if endpoint_id.endswith("2") else "billing ✓",
    )


def delivery(delivery_id: str, *, due: timedelta = timedelta(0), endpoint_id: str = "we_1") -> Delivery:
    made = new_delivery("evt_1", "credits.spent", endpoint_id, T0 + due)
    return replace(made, id=delivery_id)


def test_endpoints_are_stored_listed_oldest_first_rotated_and_removed(uow: Uow) -> None:
    # (id, minutes after T0): ties on the time are broken by id, in code point order
    made = [
        endpoint("we_b", at="1"),
        endpoint("we_B", at="1"),
        endpoint("we_2", at="5", events=("credits.spent", "wallet.balance_low")),
        endpoint("we_a", at="0"),
    ]
    with uow() as tx:
        assert tx.endpoints.all() == []
        for e in made:
            tx.endpoints.add(e)
        assert tx.endpoints.get("we_b") == made[0]  # seen inside the unit of work
        tx.commit()
    with uow() as tx:
        assert [e.id for e in tx.endpoints.all()] == ["we_a", "we_B", "we_b", "we_2"]
        assert tx.endpoints.get("we_2") == made[2]
        assert tx.endpoints.get("WE_2") is None
        rotated = made[0].rotated(T0 + HOUR)
        tx.endpoints.update(rotated)
        with pytest.raises(NotFound):
            tx.endpoints.update(endpoint("we_404"))
        assert tx.endpoints.remove("we_B") is True
        assert tx.endpoints.remove("we_B") is False
        tx.commit()
    with uow(read_only=True) as tx:
        stored = tx.endpoints.get("we_b")
        assert [e.id for e in tx.endpoints.all()] == ["we_a", "we_b", "we_2"]
    assert stored == rotated
    assert stored.signing_secrets(T0 + 2 * HOUR) == (rotated.secret, "whsec_we_b")
    assert stored.signing_secrets(T0 + 25 * HOUR) == (rotated.secret,)


def test_deliveries_are_stored_saved_and_listed_newest_first_per_endpoint(uow: Uow) -> None:
    mine = [
        delivery("whd_1"),
        delivery("whd_3", due=HOUR),
        delivery("whd_2", due=HOUR),
        delivery("whd_4", due=2 * HOUR),
    ]
    other = delivery("whd_9", endpoint_id="we_2")
    with uow() as tx:
        for d in [*mine, other]:
            tx.deliveries.add(d)
        tx.commit()
    done = replace(
        mine[1],
        status=DeliveryStatus.DELIVERED,
        attempts=2,
        next_attempt_at=None,
        last_status_code=204,
        last_error=None,
        delivered_at=T0 + 2 * HOUR,
    )
    failed = replace(
        mine[0],
        status=DeliveryStatus.FAILED,
        attempts=8,
        next_attempt_at=None,
        last_status_code=None,
        last_error="timed out after 10 s",
    )
    with uow() as tx:
        tx.deliveries.save(done)
        tx.deliveries.save(failed)
        with pytest.raises(NotFound):
            tx.deliveries.save(delivery("whd_404"))
        tx.commit()
    with uow(read_only=True) as tx:
        assert tx.deliveries.get("whd_3") == done
        assert tx.deliveries.get("whd_1") == failed
        assert tx.deliveries.get("whd_404") is None
        assert [d.id for d in tx.deliveries.for_endpoint("we_1", status=None, limit=10)] == [
            "whd_4",
            "whd_3",
            "whd_2",
            "whd_1",
        ]
        assert [d.id for d in tx.deliveries.for_endpoint("we_1", status=None, limit=2)] == ["whd_4", "whd_3"]
        assert tx.deliveries.for_endpoint("we_1", status=DeliveryStatus.PENDING, limit=10) == [mine[3], mine[2]]
        assert tx.deliveries.for_endpoint("we_1", status=DeliveryStatus.DELIVERED, limit=10) == [done]
        assert tx.deliveries.for_endpoint("we_1", status=DeliveryStatus.FAILED, limit=10) == [failed]
        assert tx.deliveries.for_endpoint("we_2", status=None, limit=10) == [other]
        assert tx.deliveries.for_endpoint("we_404", status=None, limit=10) == []


def test_a_claim_takes_due_pending_deliveries_oldest_first_and_leases_them(uow: Uow) -> None:
    due = [delivery("whd_b", due=HOUR), delivery("whd_a", due=HOUR), delivery("whd_c")]
    later = delivery("whd_later", due=3 * HOUR)
    delivered = replace(delivery("whd_done"), status=DeliveryStatus.DELIVERED, next_attempt_at=None)
    with uow() as tx:
        for d in [*due, later, delivered]:
            tx.deliveries.add(d)
        tx.commit()
    at = T0 + 2 * HOUR
    with uow() as tx:
        claimed = tx.deliveries.claim(at, at + LEASE, 10)
        tx.commit()
    assert [d.id for d in claimed] == ["whd_c", "whd_a", "whd_b"]  # by due time, then id
    assert all(d.attempts == 1 and d.next_attempt_at == at + LEASE for d in claimed)
    assert claimed[0] == replace(due[2], attempts=1, next_attempt_at=at + LEASE)
    with uow() as tx:
        assert tx.deliveries.get("whd_a") == claimed[1]
        assert tx.deliveries.claim(at, at + LEASE, 10) == []  # leased: no other worker takes them
        tx.commit()
    # a worker that died mid-delivery: when the lease ends they are due again, one attempt counted
    with uow() as tx:
        again = tx.deliveries.claim(at + LEASE, at + 2 * LEASE, 2)
        tx.commit()
    assert [(d.id, d.attempts) for d in again] == [("whd_a", 2), ("whd_b", 2)]
    with uow() as tx:
        rest = tx.deliveries.claim(at + 3 * HOUR, at + 4 * HOUR, 10)
    assert [(d.id, d.attempts) for d in rest] == [("whd_c", 2), ("whd_a", 3), ("whd_b", 3), ("whd_later", 1)]


def test_claims_one_after_the_other_take_different_deliveries(uow: Uow) -> None:
    with uow() as tx:
        for n in range(5):
            tx.deliveries.add(delivery(f"whd_{n}", due=n * MINUTE))
        tx.commit()
    at = T0 + HOUR
    batches = []
    for _ in range(3):
        with uow() as tx:
            batches.append([d.id for d in tx.deliveries.claim(at, at + LEASE, 2)])
            tx.commit()
    assert batches == [["whd_0", "whd_1"], ["whd_2", "whd_3"], ["whd_4"]]


def test_a_claim_left_without_commit_leases_nothing(uow: Uow) -> None:
    with uow() as tx:
        tx.deliveries.add(delivery("whd_1"))
        tx.commit()
    with uow() as tx:
        assert [d.id for d in tx.deliveries.claim(T0, T0 + LEASE, 10)] == ["whd_1"]
    with uow() as tx:
        assert [(d.id, d.attempts) for d in tx.deliveries.claim(T0, T0 + LEASE, 10)] == [("whd_1", 1)]
