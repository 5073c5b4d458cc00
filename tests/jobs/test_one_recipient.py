"""A user's email address is exactly one mailbox: a token's `email` claim that lists
several (or smuggles a header) is ignored, and nothing is ever sent to such a list."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from meterbill.auth.models import User
from meterbill.auth.service import lock_user
from meterbill.notify.service import notify_quota_alert
from tests.conftest import Service
from tests.jobs.conftest import Jobs, SmtpServer

STATUS = "/api/v1/billing/status"


@pytest.mark.parametrize(
    "claim",
    [
        "victim@example.com,attacker@example.org",
        "victim@example.com, attacker@example.org",
        "victim@example.com;attacker@example.org",
        "Victim <victim@example.com>, attacker@example.org",
        "Victim <victim@example.com>",
        "victim@example.com\r\nBcc: attacker@example.org",
        "victim@example.com\x00",
        "not an address",
        "",
    ],
)
def test_a_claim_that_is_not_one_address_is_ignored_and_the_user_kept(
    service: Service, claim: str
) -> None:
    headers = service.auth("u1", email="first@example.com")
    assert service.client.get(STATUS, headers=headers).status_code == 200
    answer = service.client.get(STATUS, headers=service.auth("u1", email=claim))
    assert answer.status_code == 200  # the token is valid: `sub` names the user
    fresh = service.client.get(STATUS, headers=service.auth("u2", email=claim))
    assert fresh.status_code == 200
    with service.db.reading() as session:
        assert session.get_one(User, "u1").email == "first@example.com"  # kept
        assert session.get_one(User, "u2").email is None


def test_a_single_address_is_kept_with_its_domain_normalized(service: Service) -> None:
    headers = service.auth("u1", email="Jeanne.Dupont@Example.FR")
    assert service.client.get(STATUS, headers=headers).status_code == 200
    with service.db.reading() as session:
        assert session.get_one(User, "u1").email == "Jeanne.Dupont@example.fr"


def test_a_token_listing_two_addresses_gets_no_email_to_either(
    service: Service, make_jobs: Callable[..., Jobs], smtp: SmtpServer
) -> None:
    jobs = make_jobs(smtp_url=smtp.url)
    claim = "victim@example.com,attacker@example.org"
    assert service.client.get(STATUS, headers=service.auth("u1", email=claim)).status_code == 200
    with jobs.db.transaction() as session:
        notify_quota_alert(session, "u1", "tokens", 100, "2026-11")
    jobs.run()
    assert smtp.messages == []


def test_a_stored_list_of_addresses_gets_no_email(
    make_jobs: Callable[..., Jobs], smtp: SmtpServer
) -> None:
    """Rows written before addresses were checked: the worker sends to none of them."""
    jobs = make_jobs(smtp_url=smtp.url)
    with jobs.db.transaction() as session:
        lock_user(session, "legacy", "victim@example.com,attacker@example.org")
        lock_user(session, "fine", "fine@example.com")
        notify_quota_alert(session, "legacy", "tokens", 100, "2026-11")
        notify_quota_alert(session, "fine", "tokens", 100, "2026-11")
    jobs.run()
    assert [message["To"] for message in smtp.messages] == ["fine@example.com"]
