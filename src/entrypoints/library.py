"""The wallet in-process: the same use cases the REST app calls, as plain method calls.

    from entrypoints.library import open_wallet
    wallet = open_wallet()                 # settings from the environment, migrations applied; close() ends it
    top_up = wallet.top_up("user-1", "10.00")
    grant = wallet.grant("user-1", "5.00", reason="welcome bonus", granted_by="support@example.com")
    wallet.grant("user-1", "20.00", reason="bank transfer 991", granted_by="ops", category="paid")
    spent = wallet.spend("user-1", "1.50", idempotency_key="order-7", reason="export")
    hold = wallet.hold("user-1", "2.00", idempotency_key="job-9", reason="render")
    wallet.capture(hold.hold_id, "1.25")   # the rest goes back
    wallet.balance("user-1")               # Decimal('22.25')
    wallet.revert(grant.transaction_id, reason="wrong user", idempotency_key="ticket-12")  # takes back its unspent 2.25
    wallet.revert(spent.transaction_id, reason="charged twice", idempotency_key="ticket-13", dry_run=True)
    wallet.wallet("user-1").lots           # the live lots, in the order they would be spent
    wallet.wallet("user-1").debt           # Credits: what refunds/disputes of spent credits left owing
    wallet.events("pi_...")                # the Stripe events received about a payment, oldest first
    wallet.reconcile(dry_run=True)         # what webhooks missed, compared with Stripe (see docs/payments.md)

Saving a card for automatic top-up ("Saving a card" in docs/payments.md):

    setup = wallet.setup_card("user-1")    # the user's Stripe Customer (once) and a SetupIntent (off_session)
    setup.client_secret                    # for Stripe.js confirmCardSetup in the user's browser
    card = wallet.complete_card_setup("user-1", setup.setup_intent_id)  # once Stripe says it succeeded
    card.brand, card.last4                 # ("visa", "4242"); wallet.saved_card("user-1") reads it again
    wallet.forget_card("user-1")           # forgets it and detaches it at Stripe

`Wallet` is the application service of the core (wallet_core.service), re-exported here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wallet_core.ids import check_payment_intent_id
from wallet_core.ledger import WalletView
from wallet_core.service import Wallet

if TYPE_CHECKING:
    from entrypoints.container import Container

# What `Wallet.wallet` returns, under the name earlier versions gave it (its `debt` is a domain rule now).
Balance = WalletView

__all__ = ["Balance", "Wallet", "check_payment_intent_id", "open_wallet"]


def open_wallet(container: Container | None = None, *, migrate: bool = True) -> Wallet:
    """A Wallet wired from the environment (or from `container`), with the schema migrated."""
    from entrypoints.container import Container
    from entrypoints.container import migrate as migrate_schema

    owned = container is None
    container = container or Container()
    if migrate:
        migrate_schema(container)
    wallet = container.wallet()
    if owned:
        wallet._on_close = container.shutdown_resources
    return wallet
