"""Domain results -> JSON. Amounts are strings with two decimals ("10.00"), never floats."""

from __future__ import annotations

from typing import Any

from wallet_core.ledger import CreditTransaction, WalletView
from wallet_core.use_cases import GrantResult, TopUpResult


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
        "balance_after": str(tx.balance_after),
        "reference_id": tx.reference_id,
        "reason": tx.reason,
        "created_at": tx.created_at.isoformat(),
    }


def wallet_view(view: WalletView) -> dict[str, Any]:
    return {
        "user_id": view.user_id,
        "balance": str(view.balance),
        "transactions": [transaction_view(t) for t in view.transactions],
    }


def grant_view(result: GrantResult) -> dict[str, Any]:
    return {
        "user_id": result.user_id,
        "credits_granted": str(result.credits_granted),
        "balance": str(result.balance),
        "transaction_id": result.transaction_id,
    }
