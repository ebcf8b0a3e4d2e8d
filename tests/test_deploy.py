"""The shipped deployments are secure by default: every secret is required, none has a default,
and none runs insecure. Docker and Kubernetes do not run here, so the files are read as text
(PyYAML is not a dependency)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = (ROOT / "deploy" / "compose.yaml").read_text()
KUBERNETES = (ROOT / "deploy" / "kubernetes" / "plait.yaml").read_text()
SECRETS = ("PLAIT_GRPC_TOKENS", "PLAIT_ADMIN_TOKENS", "PLAIT_EVENT_KEYS", "PLAIT_SIGNING_KEY")


def _uncommented(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_compose_requires_every_secret_and_has_no_default_for_any() -> None:
    body = _uncommented(COMPOSE)
    for name in SECRETS:
        assert re.search(rf"^\s+{name}: \$\{{{name}:\?[^}}]+\}}$", body, re.M), name
    assert "${PLAIT_POSTGRES_PASSWORD:?" in body
    # Any interpolation is a required one: no `${X}`, `${X:-default}` or `${X-default}`.
    for found in re.findall(r"\$\{([^}]*)\}", body):
        assert re.fullmatch(r"\w+:\?.+", found), found
    assert "plait:plait@" not in body and "POSTGRES_PASSWORD: plait" not in body


def test_the_kubernetes_deployment_takes_every_secret_from_a_required_secret_key() -> None:
    body = _uncommented(KUBERNETES)
    for name in SECRETS:
        pattern = (rf"- name: {name}\n\s+"
                   r"valueFrom: \{secretKeyRef: \{name: plait, key: [\w-]+\}\}")
        assert re.search(pattern, body), name
    assert "optional" not in body


def test_no_deployment_runs_insecure() -> None:
    for text in (COMPOSE, KUBERNETES):
        body = _uncommented(text)
        assert "INSECURE" not in body.upper() and "--insecure" not in body
