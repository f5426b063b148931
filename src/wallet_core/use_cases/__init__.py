"""One module per thing a user of the wallet can do."""

from wallet_core.use_cases.apply_payment_event import WebhookOutcome, apply_payment_event
from wallet_core.use_cases.grant_credits import GrantResult, grant_credits
from wallet_core.use_cases.read_wallet import read_wallet
from wallet_core.use_cases.request_top_up import TopUpResult, request_top_up

__all__ = [
    "GrantResult",
    "TopUpResult",
    "WebhookOutcome",
    "apply_payment_event",
    "grant_credits",
    "read_wallet",
    "request_top_up",
]
