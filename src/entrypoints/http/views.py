"""Domain results -> JSON. Amounts are strings with two decimals ("10.00"), never floats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from wallet_core.ledger import CreditTransaction, WalletView
from wallet_core.use_cases import ExpiryReport, GrantResult, HistoryPage, HoldResult, SpendResult, TopUpResult


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


def transaction_view(tx: CreditTransaction) -> dict[str, Any]:
    return {
        "id": tx.id,
        "kind": str(tx.kind),
        "credits": str(tx.credits),
        "held_change": str(tx.held_change),
        "balance_after": str(tx.balance_after),
        "reference_id": tx.reference_id,
        "created_at": tx.created_at.isoformat(),
        "reason": tx.reason,
        "hold_id": tx.hold_id,
        "metadata": dict(tx.metadata),
    }


def wallet_view(view: WalletView) -> dict[str, Any]:
    return {
        "user_id": view.user_id,
        "balance": str(view.balance),
        "held": str(view.held),
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
    }


def spend_view(result: SpendResult) -> dict[str, Any]:
    return {
        "user_id": result.user_id,
        "credits_spent": str(result.credits_spent),
        "balance": str(result.balance),
        "transaction_id": result.transaction_id,
    }


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
    }


def expiry_view(report: ExpiryReport) -> dict[str, Any]:
    return {
        "wallets_expired": report.wallets_expired,
        "credits_expired": str(report.credits_expired),
        "holds_released": report.holds_released,
    }
