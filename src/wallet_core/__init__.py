"""The wallet domain: money, credits, the ledger rules, the ports and the use cases.

Nothing in this package imports a framework, a database driver or the Stripe SDK.
"""
