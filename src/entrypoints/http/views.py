"""Domain results -> JSON. Amounts are strings with two decimals ("10.00"), never floats."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from wallet_core.auto_top_up import AutoTopUpStatus
from wallet_core.ledger import CreditKind, CreditTransaction, Lot, Source, WalletView
from wallet_core.money import Credits
from wallet_core.ports import StoredEvent
from wallet_core.saved_cards import SavedCard
from wallet_core.use_cases import (
    AlertView,
    BatchItemResult,
    CardSetup,
    EventPage,
    ExpiryReport,
    GrantResult,
    HistoryPage,
    HoldResult,
    ReconcileReport,
    RevertResult,
    SpendResult,
    TopUpResult,
    WebhookOutcome,
)
from wallet_core.use_cases.auto_top_up import AutoTopUpView
from wallet_core.webhooks_out import Delivery, WebhookEndpoint


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def top_up_view(result: TopUpResult) -> dict[str, Any]:
    return {
        "top_up_id": result.top_up_id,
        "payment_intent_id": result.payment_intent_id,
        "client_secret": result.client_secret,
        "amount_usd": str(result.amount),
        "credits": str(result.credits),
        "status": str(result.status),
    }


def card_setup_view(setup: CardSetup) -> dict[str, Any]:
    return {
        "setup_intent_id": setup.setup_intent_id,
        "client_secret": setup.client_secret,
        "customer_id": setup.customer_id,
    }


def payment_method_view(card: SavedCard | None) -> dict[str, Any]:
    """{"payment_method": {...}} or {"payment_method": null}: never the customer or anything more."""
    if card is None:
        return {"payment_method": None}
    return {
        "payment_method": {
            "id": card.payment_method_id,
            "brand": card.brand,
            "last4": card.last4,
            "exp_month": card.exp_month,
            "exp_year": card.exp_year,
        }
    }


def sources_view(sources: Iterable[Source]) -> list[dict[str, Any]]:
    """Which lots paid, or were paid back: [{"lot_id", "category", "credits"}], in their order."""
    return [{"lot_id": s.lot_id, "category": str(s.category), "credits": str(s.credits)} for s in sources]


def lot_view(lot: Lot) -> dict[str, Any]:
    return {
        "lot_id": lot.id,
        "category": str(lot.kind),
        "granted": str(lot.granted),
        "remaining": str(lot.remaining),
        "held": str(lot.held),
        "priority": lot.priority,
        "effective_at": _time(lot.effective_at),
        "expires_at": _time(lot.expires_at),
        "source_transaction_id": lot.source_transaction_id,
    }


def transaction_view(transaction: CreditTransaction) -> dict[str, Any]:
    return {
        "id": transaction.id,
        "kind": str(transaction.kind),
        "credits": str(transaction.credits),
        "held_change": str(transaction.held_change),
        "balance_after": str(transaction.balance_after),
        "reference_id": transaction.reference_id,
        "created_at": transaction.created_at.isoformat(),
        "reason": transaction.reason,
        "hold_id": transaction.hold_id,
        "metadata": dict(transaction.metadata),
        "reverts": transaction.reverts,
        "reverted_by": transaction.reverted_by,
        "sources": sources_view(transaction.sources),
    }


def wallet_view(view: WalletView) -> dict[str, Any]:
    return {
        "user_id": view.user_id,
        "balance": str(view.balance),
        "held": str(view.held),
        "debt": str(view.debt),
        "pending": str(view.pending),
        "by_category": {str(kind): str(view.by_category.get(kind, Credits(0))) for kind in CreditKind},
        "lots": [lot_view(lot) for lot in view.lots],
        "transactions": [transaction_view(t) for t in view.transactions],
    }


def history_view(page: HistoryPage) -> dict[str, Any]:
    return {"transactions": [transaction_view(t) for t in page.transactions], "next_cursor": page.next_cursor}


def grant_view(result: GrantResult) -> dict[str, Any]:
    return {
        "user_id": result.user_id,
        "credits_granted": str(result.credits_granted),
        "balance": str(result.balance),
        "transaction_id": result.transaction_id,
        "expires_at": _time(result.expires_at),
        "effective_at": _time(result.effective_at),
        "priority": result.priority,
        "category": str(result.category),
    }


def spend_view(result: SpendResult) -> dict[str, Any]:
    return {
        "user_id": result.user_id,
        "credits_spent": str(result.credits_spent),
        "balance": str(result.balance),
        "transaction_id": result.transaction_id,
        "sources": sources_view(result.sources),
    }


def batch_item_view(result: BatchItemResult) -> dict[str, Any]:
    view: dict[str, Any] = {
        "index": result.index,
        "idempotency_key": result.idempotency_key,
        "status": str(result.status),
    }
    if result.transaction_id is not None:
        view["transaction_id"] = result.transaction_id
    if result.balance is not None:
        view["balance"] = str(result.balance)
    if result.error is not None:
        error: dict[str, Any] = {"message": result.error.message}
        if result.error.field is not None:
            error["field"] = result.error.field
        view["error"] = error
    return view


def batch_view(results: list[BatchItemResult]) -> dict[str, Any]:
    return {"results": [batch_item_view(r) for r in results]}


def hold_view(result: HoldResult) -> dict[str, Any]:
    return {
        "hold_id": result.hold_id,
        "user_id": result.user_id,
        "status": str(result.status),
        "credits_held": str(result.amount),
        "credits_captured": str(result.captured),
        "balance": str(result.balance),
        "expires_at": _time(result.expires_at),
        "transaction_id": result.transaction_id,
        "sources": sources_view(result.sources),
    }


def revert_view(result: RevertResult) -> dict[str, Any]:
    """The same body for a new revert and its replay; a dry run's adds `"dry_run": true` (and has no
    transaction id: nothing was written)."""
    body: dict[str, Any] = {
        "transaction_id": result.transaction_id,
        "reverts": result.reverts,
        "credits_reverted": str(result.credits_reverted),
        "user_id": result.user_id,
        "balance": str(result.balance),
        "sources": sources_view(result.sources),
    }
    if result.dry_run:
        body["dry_run"] = True
    return body


def expiry_view(report: ExpiryReport) -> dict[str, Any]:
    return {
        "wallets_expired": report.wallets_expired,
        "credits_expired": str(report.credits_expired),
        "holds_released": report.holds_released,
    }


def webhook_view(outcome: WebhookOutcome) -> dict[str, Any]:
    return {
        "received": True,
        "event_id": outcome.event_id,
        "type": outcome.event_type,
        "outcome": outcome.outcome.value,
    }


def event_view(event: StoredEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "type": event.type,
        "outcome": event.outcome,
        "source": event.source,
        "received_at": event.received_at.isoformat(),
        "payment_intent_id": event.payment_intent_id,
        "top_up_id": event.top_up_id,
    }


def events_view(payment_intent_id: str, events: list[StoredEvent]) -> dict[str, Any]:
    return {"payment_intent_id": payment_intent_id, "events": [event_view(e) for e in events]}


def reconcile_view(report: ReconcileReport, *, dry_run: bool) -> dict[str, Any]:
    return {
        "dry_run": dry_run,
        "checked": report.checked,
        "already_correct": report.correct,
        "repaired": report.repaired,
        "needs_review": report.needs_review,
        "actions": list(report.actions),
        "reviews": list(report.reviews),
    }


def _utc(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def _amount(value: Credits | None) -> str | None:
    return None if value is None else str(value)


def endpoint_listed_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint as listed: never its secret."""
    return {
        "id": endpoint.id,
        "url": endpoint.url,
        "events": list(endpoint.events),
        "description": endpoint.description,
        "created_at": _utc(endpoint.created_at),
    }


def endpoint_view(endpoint: WebhookEndpoint) -> dict[str, Any]:
    """An endpoint just registered or rotated: with its secret, shown only then."""
    return {**endpoint_listed_view(endpoint), "secret": endpoint.secret}


def delivery_view(delivery: Delivery) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": str(delivery.status),
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": _utc(delivery.next_attempt_at),
        "delivered_at": _utc(delivery.delivered_at),
        "created_at": _utc(delivery.created_at),
    }


def deliveries_view(deliveries: Iterable[Delivery]) -> dict[str, Any]:
    return {"deliveries": [delivery_view(d) for d in deliveries]}


def outbound_events_view(page: EventPage) -> dict[str, Any]:
    return {"events": [event.body() for event in page.events], "next_cursor": page.next_cursor}


def alert_view(alert: AlertView) -> dict[str, Any]:
    return {
        "user_id": alert.user_id,
        "low_balance_credits": _amount(alert.low_balance_credits),
        "default_low_balance_credits": _amount(alert.default_low_balance_credits),
        "effective_low_balance_credits": _amount(alert.effective),
        "level": None if alert.level is None else str(alert.level),
    }


def auto_top_up_view(view: AutoTopUpView) -> dict[str, Any]:
    rule, last = view.rule, view.rule.last_attempt
    return {
        "enabled": view.status is not AutoTopUpStatus.DISABLED_AFTER_FAILURES,
        "threshold_credits": str(rule.threshold),
        "target_credits": _amount(rule.target),
        "amount_usd": None if rule.amount is None else str(rule.amount),
        "monthly_limit_usd": None if rule.monthly_limit is None else str(rule.monthly_limit),
        "status": str(view.status),
        "consecutive_failures": rule.consecutive_failures,
        "charged_this_month_usd": str(view.charged_this_month),
        "last_attempt": None if last is None else {
            "at": last.at.isoformat().replace("+00:00", "Z"),
            "outcome": str(last.outcome),
            "amount_usd": str(last.amount),
            "top_up_id": last.top_up_id,
            "payment_intent_id": last.payment_intent_id,
            "error_code": last.error_code,
            "error": last.error,
        },
    }
