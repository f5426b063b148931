"""docs/events.md: its verification example is run here against real signed deliveries, and each
documented event type's example has the fields the wallet really sends, so the document cannot drift."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from adapters.fake_gateway import FakePaymentGateway
from tests.e2e.conftest import WEBHOOK_SECRET, Service
from tests.fixtures.webhook_receiver import WebhookReceiver
from wallet_core.event_types import EVENT_TYPES

DOC = Path(__file__).parents[2] / "docs" / "events.md"


def documented_examples() -> dict[str, dict[str, Any]]:
    """Each `### \\`type\\`` section's JSON example, by type."""
    found: dict[str, dict[str, Any]] = {}
    for name, body in re.findall(r"^### `([a-z_.]+)`\n.*?```json\n(.*?)```", DOC.read_text(), re.DOTALL | re.M):
        found[name] = json.loads(body)
    return found


@pytest.fixture
def dev(make_service: Callable[..., Service]) -> Service:
    return make_service(FakePaymentGateway(webhook_secrets=(WEBHOOK_SECRET,)), webhook_allow_private_urls=True)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    got = WebhookReceiver().start()
    yield got
    got.close()


def test_every_event_type_is_documented_with_an_example_of_its_type() -> None:
    examples = documented_examples()
    assert set(examples) == EVENT_TYPES
    for name, example in examples.items():
        assert example["type"] == name and example["id"].startswith("evt_")
        assert set(example) == {"id", "type", "created_at", "user_id", "data"}
        assert ("balance" in example["data"]) is (name != "top_up.failed"), name  # a failed top-up changes none


def test_the_documented_examples_have_the_fields_the_wallet_sends(dev: Service) -> None:
    """The alert and spend examples, checked field by field against events made now the same way."""
    wallet = dev.container.wallet()
    wallet.set_low_balance_alert("alice", "20.00")
    wallet.grant("alice", "50.00", reason="welcome bonus", granted_by="admin:root")
    wallet.spend("alice", "35.00", reason="api calls", idempotency_key="s-1", metadata={"order": "o-17"})
    wallet.deliver_webhooks()
    made: dict[str, dict[str, Any]] = {
        e.type.value: json.loads(json.dumps(e.body())) for e in wallet.events_after(None).events
    }
    examples = documented_examples()
    for name in ("credits.granted", "credits.spent", "wallet.balance_low", "wallet.recovered"):
        assert set(examples[name]["data"]) == set(made[name]["data"]), name


def test_the_documented_verification_accepts_real_deliveries_and_refuses_a_changed_body(
    dev: Service, receiver: WebhookReceiver
) -> None:
    snippets = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert len(snippets) == 1, "docs/events.md has one Python example"
    wallet = dev.container.wallet()
    endpoint = wallet.add_webhook_endpoint(receiver.url(), ["*"])
    wallet.set_low_balance_alert("alice", "20.00")
    wallet.grant("alice", "30.00", reason="promo", granted_by="test")
    wallet.spend("alice", "15.00", reason="usage", idempotency_key="k")
    wallet.rotate_webhook_secret(endpoint.id)  # two signatures from now on: the old secret still verifies
    wallet.deliver_webhooks()
    got = receiver.wait_for(4)

    warned: list[tuple[str, str]] = []
    namespace: dict[str, Any] = {  # Any: what exec'd code defines is untyped
        "__name__": "events_doc",
        "already_seen": lambda event_id: False,
        "warn_user": lambda user, balance: warned.append((user, balance)),
    }
    code = snippets[0].replace('"whsec_..."', repr(endpoint.secret))
    exec(compile(code, str(DOC), "exec"), namespace)  # our own document
    handle = namespace["handle"]
    assert [handle(r.body, r.headers) for r in got] == [200, 200, 200, 200]
    assert warned == [("alice", "15.00")]
    assert handle(got[0].body.replace(b"alice", b"alicf"), got[0].headers) == 400
