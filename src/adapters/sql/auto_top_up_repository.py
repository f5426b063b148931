"""AutoTopUpRules over one SQL connection: NOT IMPLEMENTED YET (issue 13's automatic top-up is built on
the in-memory adapter first; the tables and this repository come with their migration).

What it answers meanwhile is what a store without the tables holds, never made-up data: no wallet has
a rule (`get` None) or a charge in flight (`charge_of` None, `claim_charges` nothing), so every booking
and every worker round on SQL go on as before. Every write, and every read that only a rule could lead
to, raises NotImplementedError, so nothing can mistake this for a working store: putting or removing a
rule on SQL fails loudly."""

from __future__ import annotations

from datetime import datetime

from adapters.sql.driver import Driver
from wallet_core.auto_top_up import AutoCharge, AutoTopUpRule
from wallet_core.money import Usd

_NOT_YET = "automatic top-up rules are not stored in SQL yet (their migration and SqlAutoTopUpRules come next)"


class SqlAutoTopUpRules:
    def __init__(self, driver: Driver) -> None:
        self._driver = driver

    def get(self, user_id: str) -> AutoTopUpRule | None:
        return None  # no table, so no rule: every booking goes on as before

    def put(self, rule: AutoTopUpRule) -> None:
        raise NotImplementedError(_NOT_YET)

    def delete(self, user_id: str) -> bool:
        raise NotImplementedError(_NOT_YET)

    def charge_of(self, user_id: str) -> AutoCharge | None:
        return None  # no table, so nothing in flight

    def add_charge(self, charge: AutoCharge) -> None:
        raise NotImplementedError(_NOT_YET)

    def claim_charges(self, at: datetime, lease_until: datetime, limit: int) -> list[AutoCharge]:
        return []  # no table, so nothing to charge: the worker's round goes on with its deliveries

    def save_charge(self, charge: AutoCharge) -> bool:
        raise NotImplementedError(_NOT_YET)

    def finish_charge(self, top_up_id: str) -> AutoCharge | None:
        raise NotImplementedError(_NOT_YET)

    def charged_since(self, user_id: str, since: datetime) -> Usd:
        raise NotImplementedError(_NOT_YET)
