"""`wallet verify`: check every invariant of the ledger and name what breaks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from wallet_core.ledger import Account
from wallet_core.money import Credits
from wallet_core.ports import UnitOfWork, UnitOfWorkFactory
from wallet_core.refunds import taken_back_by_top_up
from wallet_core.reverts import mirrors


@dataclass(frozen=True)
class Violation:
    subject: str  # the transaction or account that breaks a rule, e.g. "wallet:alice"
    problem: str


@dataclass(frozen=True)
class LedgerCheck:
    """One audit of the ledger, read in one snapshot: how many accounts it checked, and what breaks."""

    accounts_checked: int
    violations: list[Violation]


def verify_ledger(*, uow: UnitOfWorkFactory) -> list[Violation]:
    """Every broken invariant (see `check_ledger`); an empty list means the ledger is sound."""
    return check_ledger(uow=uow).violations


def check_ledger(*, uow: UnitOfWorkFactory) -> LedgerCheck:
    """No violations means: postings sum to zero overall and per transaction, every stored balance
    equals the sum of its postings and of its lots, and no balance or lot is negative except by a
    recorded debt (credits refunded or disputed after they were spent, never more than was taken back),
    no payment lost more credits to its refunds and disputes than it granted, and every revert mirrors
    what it reverts and no transaction is reverted twice. The ledger is audited once, in one read-only
    unit of work."""
    with uow(read_only=True) as tx:  # a long read: it must not hold up payments
        audit = tx.ledger.audit()
        taken_back = _payments_taken_back_beyond_their_grant(tx)
        reverts = _reverts_that_do_not_mirror(tx)
    found: list[Violation] = []
    if audit.total_posted.minor != 0:
        found.append(Violation("ledger", f"all postings sum to {audit.total_posted}, not 0"))
    for transaction_id, total in audit.unbalanced:
        found.append(Violation(transaction_id, f"postings sum to {total}, not 0"))
    for acc in audit.accounts:
        name = f"{acc.account}:{acc.user_id}"
        if acc.stored != acc.posted:
            found.append(Violation(name, f"stored balance {acc.stored} but postings sum to {acc.posted}"))
        if acc.in_lots != acc.posted:
            found.append(Violation(name, f"postings sum to {acc.posted} but its lots hold {acc.in_lots}"))
        if acc.account is Account.HELD and acc.stored.minor < 0:
            found.append(Violation(name, f"negative balance {acc.stored}"))
        if acc.account is Account.WALLET and -acc.stored.minor > acc.debt.minor:
            # A wallet may go negative only by a recorded debt: credits refunded or disputed after
            # they were spent, owed by the top-up's lot (docs/ledger.md).
            found.append(Violation(name, f"negative balance {acc.stored} beyond its recorded debt {acc.debt}"))
        if acc.unexplained_debt.is_positive():
            found.append(Violation(name, f"its lots are overdrawn by {acc.unexplained_debt} that no refund or "
                                         "dispute took back"))
    return LedgerCheck(accounts_checked=len(audit.accounts), violations=found + taken_back + reverts)


def _reverts_that_do_not_mirror(tx: UnitOfWork) -> list[Violation]:
    """Each revert names a transaction of the same user that may be reverted, posts what a revert of it
    may post (wallet_core.reverts.mirrors), and no transaction is reverted more than once."""
    found: list[Violation] = []
    times: Counter[str] = Counter()
    for pair in tx.ledger.revert_audit():
        revert, original = pair.revert, pair.original
        if revert.reverts is None:
            found.append(Violation(revert.id, "is a revert that names no transaction"))
            continue
        times[revert.reverts] += 1
        if original is None:
            found.append(Violation(revert.id, f"reverts {revert.reverts}, which does not exist"))
        elif original.user_id != revert.user_id:
            found.append(Violation(revert.id, f"reverts {original.id} of another user ({original.user_id})"))
        else:
            problem = mirrors(original, pair.original_postings, pair.revert_postings)
            if problem is not None:
                found.append(Violation(revert.id, problem))
    found += [Violation(tx_id, f"reverted {n} times") for tx_id, n in sorted(times.items()) if n > 1]
    return found


def _payments_taken_back_beyond_their_grant(tx: UnitOfWork) -> list[Violation]:
    """Per payment: the credits its refunds took plus those its disputes froze (open or lost) are at
    most what it granted, and no won dispute gave back more than it froze."""
    found: list[Violation] = []
    for top_up_id, taken in sorted(taken_back_by_top_up(tx.ledger.take_backs()).items()):
        top_up = tx.top_ups.get(top_up_id)
        if top_up is None:
            found.append(Violation(f"top-up:{top_up_id}", f"refunds and disputes took {taken.total} credits of a "
                                                          "top-up that does not exist"))
            continue
        intent_id = top_up.payment_intent_id
        grant = tx.ledger.find_transaction_by_reference(intent_id) if intent_id is not None else None
        granted = grant.credits if grant is not None else Credits(0)
        subject = f"payment:{intent_id or top_up.id}"
        if taken.total > granted:
            found.append(Violation(subject, f"refunds took {taken.by_refunds} and disputes froze {taken.by_disputes} "
                                            f"credits, more than the {granted} it granted"))
        found += [Violation(subject, f"dispute {d} gave back more than it froze") for d in taken.over_given_back]
    return found
