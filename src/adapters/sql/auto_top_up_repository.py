"""AutoTopUpRules over one SQL connection (tables `auto_top_up_rules` and `auto_top_up_charges`, 0010):
plain SQL sent to the driver, one statement per method (claim: 2 on SQLite).

Every booking asks `get` (wallet_core.use_cases.recording.book -> note_auto_top_up). The lock of an
existing wallet (SqlLedgerRepository) already read whether it has a rule and left the answer in
`locked`, shared with this repository: a wallet without one (nearly every wallet) costs no statement
here; one with a rule, a SELECT by primary key. `charge_of`, the saved card and the monthly sum come
only when the balance is below the rule's threshold.

The charge row's primary key is the user id: at most one automatic top-up in flight per wallet, and an
INSERT that meets one answers AutoTopUpInFlight (ON CONFLICT DO NOTHING: on PostgreSQL it waits for a
concurrent insert of the same wallet to commit or roll back, then decides). Claiming is as for webhook
deliveries (adapters.sql.webhook_repository): PostgreSQL picks, locks (FOR UPDATE SKIP LOCKED) and
leases in one statement, so servers claim different charges; SQLite's writer lock makes two statements
safe.
"""

# ruff: noqa: S608 -- the f-strings splice in the constant column lists below, never a value

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from adapters.sql.driver import Driver, Sql
from adapters.sql.lease_claim import LeaseClaim
from wallet_core.auto_top_up import AttemptOutcome, AutoCharge, AutoTopUpAttempt, AutoTopUpRule
from wallet_core.errors import AutoTopUpInFlight
from wallet_core.money import Credits, Usd
from wallet_core.topups import CHARGED_STATUSES

RULE_COLUMNS = (
    "user_id, threshold, target, amount_cents, monthly_limit_cents, consecutive_failures, disabled_at, updated_at, "
    "last_at, last_outcome, last_amount_cents, last_top_up_id, last_payment_intent_id, last_error_code, last_error"
)
CHARGE_COLUMNS = (
    "user_id, top_up_id, amount_cents, customer_id, payment_method_id, created_at, due_at, attempts, payment_intent_id"
)


def _params(columns: str) -> str:
    return ", ".join(f":{c.strip()}" for c in columns.split(","))


_RULE = Sql.of(f"SELECT {RULE_COLUMNS} FROM auto_top_up_rules WHERE user_id = :p_user")
_PUT_RULE = Sql.of(
    f"""
    INSERT INTO auto_top_up_rules ({RULE_COLUMNS}) VALUES ({_params(RULE_COLUMNS)})
    ON CONFLICT (user_id) DO UPDATE SET
        threshold = excluded.threshold, target = excluded.target, amount_cents = excluded.amount_cents,
        monthly_limit_cents = excluded.monthly_limit_cents, consecutive_failures = excluded.consecutive_failures,
        disabled_at = excluded.disabled_at, updated_at = excluded.updated_at, last_at = excluded.last_at,
        last_outcome = excluded.last_outcome, last_amount_cents = excluded.last_amount_cents,
        last_top_up_id = excluded.last_top_up_id, last_payment_intent_id = excluded.last_payment_intent_id,
        last_error_code = excluded.last_error_code, last_error = excluded.last_error
    """
)
_DELETE_RULE = Sql.of("DELETE FROM auto_top_up_rules WHERE user_id = :p_user")

_CHARGE_OF = Sql.of(f"SELECT {CHARGE_COLUMNS} FROM auto_top_up_charges WHERE user_id = :p_user")
_ADD_CHARGE = Sql.of(
    f"""
    INSERT INTO auto_top_up_charges ({CHARGE_COLUMNS}) VALUES ({_params(CHARGE_COLUMNS)})
    ON CONFLICT DO NOTHING RETURNING user_id
    """
)
_SAVE_CHARGE = Sql.of(
    """
    UPDATE auto_top_up_charges SET due_at = :due_at, attempts = :attempts, payment_intent_id = :payment_intent_id,
        customer_id = :customer_id, payment_method_id = :payment_method_id
    WHERE user_id = :user_id AND top_up_id = :top_up_id
    """
)
_FINISH_CHARGE = Sql.of(f"DELETE FROM auto_top_up_charges WHERE top_up_id = :p_top_up RETURNING {CHARGE_COLUMNS}")
_CLAIM = LeaseClaim.of(table="auto_top_up_charges", columns=CHARGE_COLUMNS, due="due_at")
_CHARGED = ", ".join(f"'{s.value}'" for s in sorted(CHARGED_STATUSES))
# What the wallet's automatic top-ups since a time charge, pending or paid (ix_top_ups_user_created).
_CHARGED_SINCE = Sql.of(
    f"""
    SELECT COALESCE(SUM(amount_cents), 0) FROM top_ups
    WHERE user_id = :p_user AND created_at >= :p_since AND automatic = 1 AND status IN ({_CHARGED})
    """
)


class SqlAutoTopUpRules:
    def __init__(self, driver: Driver, locked: dict[str, bool] | None = None) -> None:
        self._driver = driver
        # user id -> whether the wallet has a rule, as this transaction's lock of the wallet read it (the
        # lock keeps anyone else from putting or removing it meanwhile: rules change under it).
        self._locked: dict[str, bool] = {} if locked is None else locked

    # -- the rule ------------------------------------------------------------------------------
    def get(self, user_id: str) -> AutoTopUpRule | None:
        if self._locked.get(user_id) is False:
            return None
        row = self._driver.one(_RULE, {"p_user": user_id})
        return None if row is None else self._rule_of(row)

    def put(self, rule: AutoTopUpRule) -> None:
        at = self._driver.at
        last = rule.last_attempt
        self._driver.run(
            _PUT_RULE,
            {
                "user_id": rule.user_id,
                "threshold": rule.threshold.minor,
                "target": None if rule.target is None else rule.target.minor,
                "amount_cents": None if rule.amount is None else rule.amount.cents,
                "monthly_limit_cents": None if rule.monthly_limit is None else rule.monthly_limit.cents,
                "consecutive_failures": rule.consecutive_failures,
                "disabled_at": at(rule.disabled_at),
                "updated_at": at(rule.updated_at),
                "last_at": None if last is None else at(last.at),
                "last_outcome": None if last is None else last.outcome.value,
                "last_amount_cents": None if last is None else last.amount.cents,
                "last_top_up_id": None if last is None else last.top_up_id,
                "last_payment_intent_id": None if last is None else last.payment_intent_id,
                "last_error_code": None if last is None else last.error_code,
                "last_error": None if last is None else last.error,
            },
        )
        if rule.user_id in self._locked:
            self._locked[rule.user_id] = True

    def delete(self, user_id: str) -> bool:
        if user_id in self._locked:
            self._locked[user_id] = False
        return self._driver.run(_DELETE_RULE, {"p_user": user_id}) > 0

    def _rule_of(self, row: Sequence[Any]) -> AutoTopUpRule:
        (user_id, threshold, target, amount, limit, failures, disabled_at, updated_at,
         last_at, outcome, last_amount, top_up_id, intent_id, code, error) = row
        time = self._driver.time
        last = None
        if last_at is not None:
            last = AutoTopUpAttempt(
                time(last_at), AttemptOutcome(outcome), Usd(last_amount), top_up_id, intent_id, code, error
            )
        return AutoTopUpRule(
            user_id=user_id,
            threshold=Credits(threshold),
            target=None if target is None else Credits(target),
            amount=None if amount is None else Usd(amount),
            monthly_limit=None if limit is None else Usd(limit),
            updated_at=time(updated_at),
            consecutive_failures=int(failures),
            disabled_at=None if disabled_at is None else time(disabled_at),
            last_attempt=last,
        )

    # -- the charge in flight ------------------------------------------------------------------
    def charge_of(self, user_id: str) -> AutoCharge | None:
        row = self._driver.one(_CHARGE_OF, {"p_user": user_id})
        return None if row is None else self._charge_of(row)

    def add_charge(self, charge: AutoCharge) -> None:
        added = self._driver.one(_ADD_CHARGE, self._charge_params(charge))
        if added is None:
            raise AutoTopUpInFlight(f"wallet {charge.user_id} has an automatic top-up in flight")

    def claim_charges(self, at: datetime, lease_until: datetime, limit: int) -> list[AutoCharge]:
        return [self._charge_of(row) for row in _CLAIM.claim(self._driver, at, lease_until, limit)]

    def save_charge(self, charge: AutoCharge) -> bool:
        return self._driver.run(_SAVE_CHARGE, self._charge_params(charge)) > 0

    def finish_charge(self, top_up_id: str) -> AutoCharge | None:
        row = self._driver.one(_FINISH_CHARGE, {"p_top_up": top_up_id})
        return None if row is None else self._charge_of(row)

    def charged_since(self, user_id: str, since: datetime) -> Usd:
        row = self._driver.one(_CHARGED_SINCE, {"p_user": user_id, "p_since": self._driver.at(since)})
        assert row is not None  # an aggregate always answers one row
        return Usd(int(row[0]))

    def _charge_params(self, charge: AutoCharge) -> dict[str, Any]:
        at = self._driver.at
        return {
            "user_id": charge.user_id,
            "top_up_id": charge.top_up_id,
            "amount_cents": charge.amount.cents,
            "customer_id": charge.customer_id,
            "payment_method_id": charge.payment_method_id,
            "created_at": at(charge.created_at),
            "due_at": None if charge.due_at is None else at(charge.due_at),
            "attempts": charge.attempts,
            "payment_intent_id": charge.payment_intent_id,
        }

    def _charge_of(self, row: Sequence[Any]) -> AutoCharge:
        user_id, top_up_id, cents, customer, method, created_at, due_at, attempts, intent_id = row
        time = self._driver.time
        return AutoCharge(
            top_up_id=top_up_id,
            user_id=user_id,
            amount=Usd(cents),
            customer_id=customer,
            payment_method_id=method,
            created_at=time(created_at),
            due_at=None if due_at is None else time(due_at),
            attempts=int(attempts),
            payment_intent_id=intent_id,
        )
