"""Per-user top-up limits: at most `max_open` unpaid top-ups at a time, at most `max_per_hour` started
in an hour, as the recorded top-ups say. A refused request writes nothing and says when to retry; it
asks nothing of Stripe, unless concurrent requests of the user filled the limit while Stripe made its
intent (then the intent is canceled, when the request had no Idempotency-Key)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from adapters.fake_gateway import FakePaymentGateway
from adapters.memory_ledger import InMemoryStore, InMemoryUnitOfWork
from tests.unit.helpers import FakeClock
from wallet_core.errors import PaymentGatewayFailed, TooManyTopUps
from wallet_core.payments import PaymentIntent, PaymentIntentRequest
from wallet_core.topups import TopUpLimits, TopUpPolicy, TopUpStatus
from wallet_core.use_cases import TopUpResult, request_top_up

UowFactory = Callable[..., InMemoryUnitOfWork]


@pytest.fixture
def start(
    policy: TopUpPolicy, gateway: FakePaymentGateway, uow: UowFactory, fake_clock: FakeClock
) -> Callable[..., TopUpResult]:
    def call(user: str = "alice", *, key: str | None = None, max_open: int = 3, max_per_hour: int = 100) -> TopUpResult:
        limited = replace(policy, limits=TopUpLimits(max_open=max_open, max_per_hour=max_per_hour))
        return request_top_up(
            user_id=user, amount_usd="10", policy=limited, gateway=gateway, uow=uow, idempotency_key=key,
            now=fake_clock,
        )

    return call


def _set_status(uow: UowFactory, top_up_id: str, status: TopUpStatus) -> None:
    with uow() as tx:
        tx.top_ups.set_status(top_up_id, status, datetime.now(UTC))
        tx.commit()


def _refused(call: Callable[[], object], store: InMemoryStore, gateway: FakePaymentGateway) -> TooManyTopUps:
    before = (store.state.copy(), store.commits, len(gateway.create_calls))
    with pytest.raises(TooManyTopUps) as err:
        call()
    assert (store.state, store.commits, len(gateway.create_calls)) == before  # nothing written, Stripe not asked
    return err.value


def test_at_most_max_open_unpaid_top_ups_and_retry_after_says_when_the_oldest_stops_counting(
    start: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway, fake_clock: FakeClock
) -> None:
    start()
    fake_clock.advance(minutes=10)
    start()
    start()

    refused = _refused(start, store, gateway)
    assert refused.retry_after_seconds == int(timedelta(hours=24, minutes=-10).total_seconds())
    assert "at most 3" in refused.description
    start("bob")  # another user is not limited by alice's top-ups


@pytest.mark.parametrize(
    ("status", "frees"),
    [
        (TopUpStatus.SUCCEEDED, True),
        (TopUpStatus.CANCELED, True),
        (TopUpStatus.NEEDS_REVIEW, True),
        (TopUpStatus.FAILED, False),  # its PaymentIntent can still be paid
    ],
)
def test_only_pending_and_failed_top_ups_are_open(
    start: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway, uow: UowFactory,
    status: TopUpStatus, frees: bool,
) -> None:
    first, _, _ = start(), start(), start()
    _set_status(uow, first.top_up_id, status)
    if frees:
        start()
    else:
        _refused(start, store, gateway)


def test_an_open_top_up_older_than_a_day_no_longer_counts(
    start: Callable[..., TopUpResult], fake_clock: FakeClock
) -> None:
    start(), start(), start()
    fake_clock.advance(hours=24)
    start()


def test_at_most_max_per_hour_started_whatever_became_of_them(
    start: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway, uow: UowFactory,
    fake_clock: FakeClock,
) -> None:
    for _ in range(4):
        _set_status(uow, start(max_per_hour=4).top_up_id, TopUpStatus.SUCCEEDED)
        fake_clock.advance(minutes=5)

    refused = _refused(lambda: start(max_per_hour=4), store, gateway)
    assert refused.retry_after_seconds == 40 * 60  # the first one was started 20 minutes ago
    assert "4 top-ups" in refused.description and "hour" in refused.description
    fake_clock.advance(minutes=40)
    start(max_per_hour=4)


def test_a_failed_stripe_call_counts_against_no_limit(
    start: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    """The limits count top-ups recorded; failed calls to Stripe are bounded by STRIPE_MAX_CONCURRENT_CALLS."""
    for _ in range(3):
        gateway.fail_next(PaymentGatewayFailed("refused", outcome_unknown=False))
        with pytest.raises(PaymentGatewayFailed):
            start(max_open=2, max_per_hour=2)
    assert store.commits == 0
    start(max_open=2, max_per_hour=2), start(max_open=2, max_per_hour=2)
    _refused(lambda: start(max_open=2, max_per_hour=2), store, gateway)


def test_a_replay_of_a_recorded_top_up_is_answered_at_the_limit(
    start: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    first = start(key="order-1")
    start(), start()
    _refused(start, store, gateway)

    again = start(key="order-1")
    assert (again.replayed, again.top_up_id, again.client_secret) == (True, first.top_up_id, first.client_secret)


def test_a_retry_of_a_top_up_whose_answer_was_lost_is_the_same_top_up_not_another(
    start: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    start(), start()
    gateway.time_out_next_create()
    with pytest.raises(PaymentGatewayFailed):
        start(key="order-9")  # the third: Stripe made its intent, the answer was lost; nothing recorded

    retry = start(key="order-9")
    assert retry.replayed is False
    assert len(store.state.top_ups) == 3 and len(gateway.intents) == 3 and store.commits == 3


class _OvertakenAtStripe(FakePaymentGateway):
    """While Stripe makes an intent, the calls in `meanwhile` run: other requests of the same user
    that finish before this one gets its answer."""

    def __init__(self) -> None:
        super().__init__()
        self.meanwhile: list[Callable[[], object]] = []

    def create_payment_intent(self, request: PaymentIntentRequest) -> PaymentIntent:
        intent = super().create_payment_intent(request)
        run, self.meanwhile = self.meanwhile, []
        for call in run:
            call()
        return intent


@pytest.mark.parametrize("key", [None, "order-7"], ids=["no-key", "key"])
def test_a_request_overtaken_while_stripe_made_its_intent_is_refused_and_writes_nothing(
    policy: TopUpPolicy, store: InMemoryStore, uow: UowFactory, fake_clock: FakeClock, key: str | None
) -> None:
    """The limits let it through, then another request of the same user recorded the last top-up
    allowed while Stripe made this one's intent. Under the user's lock the limits are read again:
    429, nothing written. Without a key nobody can ask for that intent again, so it is canceled; with
    one it is kept, and the client's retry, once there is room, records it."""
    gateway = _OvertakenAtStripe()
    limited = replace(policy, limits=TopUpLimits(max_open=1, max_per_hour=100))

    def request(idempotency_key: str | None) -> TopUpResult:
        return request_top_up(user_id="alice", amount_usd="10", policy=limited, gateway=gateway, uow=uow,
                              idempotency_key=idempotency_key, now=fake_clock)

    other: list[TopUpResult] = []
    gateway.meanwhile.append(lambda: other.append(request(None)))
    with pytest.raises(TooManyTopUps) as refused:
        request(key)

    (recorded,) = other
    assert list(store.state.top_ups) == [recorded.top_up_id] and store.commits == 1  # the other's only
    (mine,) = (i for i in gateway.intents.values() if i.id != recorded.payment_intent_id)
    assert mine.status == ("canceled" if key is None else "requires_payment_method")
    assert gateway.intents[recorded.payment_intent_id].status == "requires_payment_method"
    assert refused.value.retry_after_seconds == 24 * 3600  # when the other stops counting
    if key is not None:
        _set_status(uow, recorded.top_up_id, TopUpStatus.SUCCEEDED)  # paid: room for one more
        retry = request(key)
        assert (retry.payment_intent_id, retry.replayed, retry.client_secret) == (mine.id, False, mine.client_secret)
        assert len(gateway.intents) == 2


def test_a_burst_of_concurrent_requests_gets_exactly_max_open_and_the_others_intents_are_canceled(
    start: Callable[..., TopUpResult], store: InMemoryStore, gateway: FakePaymentGateway
) -> None:
    results: list[TopUpResult] = []
    refused: list[TooManyTopUps] = []
    barrier = threading.Barrier(12)

    def worker() -> None:
        barrier.wait()
        try:
            results.append(start(max_open=5))
        except TooManyTopUps as exc:
            refused.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(results), len(refused)) == (5, 7)
    assert len(store.state.top_ups) == 5 and store.commits == 5
    # A refused request either never reached Stripe or had its intent canceled (no key): every intent
    # that is not canceled belongs to a recorded top-up.
    live = {i.id for i in gateway.intents.values() if i.status != "canceled"}
    assert live == {r.payment_intent_id for r in results}


@pytest.mark.parametrize("limits", [None, TopUpLimits(max_open=0, max_per_hour=0)], ids=["none", "zero"])
def test_no_limits_or_zero_turn_them_off(
    policy: TopUpPolicy, gateway: FakePaymentGateway, uow: UowFactory, limits: TopUpLimits | None
) -> None:
    for _ in range(12):
        request_top_up(user_id="alice", amount_usd="10", policy=replace(policy, limits=limits), gateway=gateway,
                       uow=uow)
