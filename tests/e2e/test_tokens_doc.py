"""docs/tokens.md: its Python example is run here against the app, so the document cannot drift from
what the wallet checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jwt
import pytest

from entrypoints.http.auth import ALGORITHM
from tests.e2e.conftest import JWT_SECRET, Service

DOC = Path(__file__).parents[2] / "docs" / "tokens.md"


def doc_snippets() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The names the document's Python example defines, run with the service's secret."""
    monkeypatch.setenv("WALLET_JWT_SECRET", JWT_SECRET)
    snippets = doc_snippets()
    assert len(snippets) == 1, "docs/tokens.md has one Python example"
    namespace: dict[str, Any] = {"__name__": "tokens_doc"}  # Any: what exec'd code defines is untyped
    exec(compile(snippets[0], str(DOC), "exec"), namespace)  # our own document
    return namespace


def test_the_documented_tokens_are_what_the_wallet_accepts(service: Service, example: dict[str, Any]) -> None:
    service.container.wallet().grant("alice", "10.00", reason="funding", granted_by="test")
    client = service.client
    user = {"Authorization": f"Bearer {example['user_token']}"}
    spend = {"credits": "1.00", "reason": "export"}

    shown = client.simulate_get("/api/v1/users/me/wallet", headers=user)
    assert shown.status_code == 200 and shown.json["user_id"] == "alice"
    assert client.simulate_post("/api/v1/admin/users/alice/wallet/spend", json=spend,
                                headers={**user, "Idempotency-Key": "u"}).status_code == 403

    spent = client.simulate_post("/api/v1/admin/users/alice/wallet/spend", json=spend,
                                 headers={**example["headers"], "Idempotency-Key": "s"})
    assert spent.status_code == 201 and spent.json["balance"] == "9.00"
    grant = {"credits": "5.00", "reason": "welcome"}
    assert client.simulate_post("/api/v1/admin/users/alice/wallet/grant", json=grant,
                                headers={**example["headers"], "Idempotency-Key": "g"}).status_code == 403

    admin = example["wallet_token"]("root", roles=("admin",))
    granted = client.simulate_post("/api/v1/admin/users/alice/wallet/grant", json=grant,
                                   headers={"Authorization": f"Bearer {admin}", "Idempotency-Key": "g"})
    assert granted.status_code == 201


def test_the_documented_claims_and_algorithm_are_the_ones_minted(example: dict[str, Any]) -> None:
    token = example["user_token"]
    assert jwt.get_unverified_header(token)["alg"] == ALGORITHM == "HS256"
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    assert set(claims) == {"sub", "roles", "iat", "exp"}
    assert claims["exp"] - claims["iat"] == 900
    assert "| `sub` | yes |" in DOC.read_text() and "| `exp` | yes |" in DOC.read_text()


def test_a_token_signed_with_a_rotated_out_secret_is_refused(
    service: Service, example: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the rotation section promises: one secret, no overlap."""
    monkeypatch.setenv("WALLET_JWT_SECRET", "the-new-secret-that-is-long-enough-0123456789")
    rotated = example["wallet_token"]("alice")
    resp = service.client.simulate_get("/api/v1/users/me/wallet", headers={"Authorization": f"Bearer {rotated}"})
    assert (resp.status_code, resp.json["description"]) == (401, "the token is not valid")
