"""docs/payments.md, "Automatic top-up: the whole flow": its mermaid sequence diagram names only routes the
app serves (with that method), Stripe events the webhook table says the wallet consumes, and outbound
events, rule statuses and attempt outcomes the wallet has; so the drawing cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conftest import Service
from wallet_core.auto_top_up import AttemptOutcome, AutoTopUpStatus
from wallet_core.event_types import EventType

DOC = Path(__file__).parents[2] / "docs" / "payments.md"
SECTION = "## Automatic top-up: the whole flow"


def flow() -> tuple[str, str]:
    """The section's text and its one mermaid diagram."""
    text = DOC.read_text()
    assert SECTION in text, f"docs/payments.md has no '{SECTION}' section"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    diagrams = re.findall(r"```mermaid\n(.*?)```", section, flags=re.DOTALL)
    assert len(diagrams) == 1, "the section draws the flow once"
    return section, diagrams[0]


def test_the_flow_is_a_sequence_diagram_from_the_browser_to_the_credits() -> None:
    section, diagram = flow()
    assert diagram.startswith("sequenceDiagram\n")
    for step in ("confirmCardSetup", "off_session=true", "idempotency key = top-up id",
                 "payment_intent.succeeded", "grant the credits once", "auto_top_up.succeeded",
                 "auto_top_up.failed", "auto_top_up.disabled"):
        assert step in diagram, step
    assert "confirmCardSetup" in section.split("```", 2)[2], "the frontend's part is said after the diagram"


def test_the_routes_the_flow_names_are_served_with_that_method(service: Service) -> None:
    section, _ = flow()
    spec = service.client.simulate_get("/openapi.json").json
    named = set(re.findall(r"\b(GET|POST|PUT|DELETE) (/api/v1/[A-Za-z0-9_/{}.-]+)", section))
    assert len(named) >= 4, named
    for method, path in sorted(named):
        assert path in spec["paths"], path
        assert method.lower() in spec["paths"][path], (method, path)


def test_the_events_statuses_and_outcomes_the_flow_names_exist() -> None:
    section, diagram = flow()
    consumed = DOC.read_text().split("## The Stripe events the service consumes", 1)[1].split("\n## ", 1)[0]
    for stripe_event in set(re.findall(r"\b((?:payment|setup)_intent\.[a-z_]+)", section)):
        assert f"`{stripe_event}`" in consumed, stripe_event
    outbound = set(re.findall(r"\b(auto_top_up\.[a-z_]+)", section))
    assert outbound and outbound <= {e.value for e in EventType}, outbound
    known = {s.value for s in AutoTopUpStatus} | {o.value for o in AttemptOutcome}
    for name in ("skipped_monthly_limit", "disabled_after_failures"):
        assert name in diagram and name in known, name
    assert "paused_no_payment_method" in section and "paused_no_payment_method" in known
