"""Adapters: the ports of wallet_core made real (Stripe, SQL) or fake (in memory, for tests)."""
