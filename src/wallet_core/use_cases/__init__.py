"""One module per thing a user of the wallet can do.

One vocabulary throughout: `uow` is a UnitOfWorkFactory (each call opens a unit of work), `tx` is an
open UnitOfWork (one database transaction), a ledger entry is a `transaction` (CreditTransaction);
`now` is the injected Clock, and `at` is the instant read from it once per unit of work.
"""

from wallet_core.use_cases.apply_payment_event import WebhookOutcome, apply_payment_event
from wallet_core.use_cases.balance_alerts import AlertView, clear_alert, get_alert, set_alert
from wallet_core.use_cases.expire_credits import ExpiryReport, expire_credits
from wallet_core.use_cases.grant_credits import GrantResult, grant_credits
from wallet_core.use_cases.holds import HoldResult, capture_hold, place_hold, release_hold
from wallet_core.use_cases.list_events import EventPage, list_events
from wallet_core.use_cases.read_wallet import HistoryPage, list_transactions, read_wallet
from wallet_core.use_cases.reconcile_payments import ReconcileReport, reconcile_payments
from wallet_core.use_cases.request_top_up import TopUpResult, request_top_up
from wallet_core.use_cases.revert_transaction import RevertResult, revert_transaction
from wallet_core.use_cases.save_card import (
    CardSetup,
    complete_card_setup,
    forget_card,
    saved_card,
    start_card_setup,
)
from wallet_core.use_cases.spend_credits import SpendResult, spend_credits
from wallet_core.use_cases.verify_ledger import LedgerCheck, Violation, check_ledger, verify_ledger

__all__ = [
    "AlertView",
    "CardSetup",
    "EventPage",
    "ExpiryReport",
    "GrantResult",
    "HistoryPage",
    "HoldResult",
    "LedgerCheck",
    "ReconcileReport",
    "RevertResult",
    "SpendResult",
    "TopUpResult",
    "Violation",
    "WebhookOutcome",
    "apply_payment_event",
    "capture_hold",
    "check_ledger",
    "clear_alert",
    "complete_card_setup",
    "expire_credits",
    "forget_card",
    "get_alert",
    "grant_credits",
    "list_events",
    "list_transactions",
    "place_hold",
    "read_wallet",
    "reconcile_payments",
    "release_hold",
    "request_top_up",
    "revert_transaction",
    "saved_card",
    "set_alert",
    "spend_credits",
    "start_card_setup",
    "verify_ledger",
]
