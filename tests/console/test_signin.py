"""Signing in to /admin in a real browser: the session cookie, wrong passwords, the
lockout, signing out, and forms without their CSRF token."""

from __future__ import annotations

from datetime import timedelta

import httpx
from playwright.sync_api import Page, expect
from sqlalchemy import select

from meterbill.admin.models import AuditEntry
from tests.console.conftest import OPERATOR, PASSWORD, Console, sign_in


def _audit(console: Console) -> list[tuple[str, str]]:
    with console.service.db.reading() as session:
        rows = session.execute(select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id))
        return [(actor, action) for actor, action in rows]


def test_signing_in_opens_the_overview_with_a_strict_httponly_cookie(
    page: Page, console: Console
) -> None:
    page.goto(f"{console.url}/admin/users")
    expect(page).to_have_url(f"{console.url}/admin/sign-in?next=/admin/users")
    sign_in(page, console, goto=False)
    expect(page).to_have_url(f"{console.url}/admin/users")
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Overview")
    expect(page.get_by_text(OPERATOR)).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "meterbill_admin"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert cookie["secure"] is False  # plain HTTP here; Secure is set behind TLS
    assert (OPERATOR, "sign_in") in _audit(console)


def test_a_wrong_password_is_refused_and_repeated_ones_lock_the_account(
    page: Page, console: Console
) -> None:
    sign_in(page, console, "not the password at all")
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    for _ in range(3):
        sign_in(page, console, "still not the password")
    expect(page.get_by_role("alert")).to_have_text("Wrong email or password.")
    sign_in(page, console, "fifth wrong password")
    expect(page.get_by_role("alert")).to_contain_text("locked until")
    # Locked: even the right password is refused, without being checked.
    sign_in(page, console, PASSWORD)
    expect(page.get_by_role("alert")).to_contain_text("locked until")
    expect(page).to_have_url(f"{console.url}/admin/sign-in")
    assert "meterbill_admin" not in {c["name"] for c in page.context.cookies()}
    actions = [action for _, action in _audit(console)]
    assert actions.count("sign_in.failed") == 4
    assert "account.locked" in actions and "sign_in.refused" in actions
    assert "sign_in" not in actions
    # After the lock runs out, the right password works again.
    console.service.clock.fixed = console.service.clock() + timedelta(minutes=16)
    sign_in(page, console, PASSWORD)
    expect(page.get_by_role("heading", level=1)).to_contain_text("Overview")


def test_signing_out_ends_the_session(page: Page, console: Console) -> None:
    sign_in(page, console)
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "meterbill_admin"]
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{console.url}/admin/sign-in")
    # The old cookie no longer opens anything, even replayed by another client.
    stolen = httpx.get(
        f"{console.url}/admin", cookies={"meterbill_admin": cookie["value"]}, follow_redirects=False
    )
    assert stolen.status_code == 303
    assert stolen.headers["location"].startswith("/admin/sign-in")


def test_a_post_without_the_csrf_token_is_refused(page: Page, console: Console) -> None:
    number = console.issue_invoice("user-1", "in_csrf")
    sign_in(page, console)
    before = _audit(console)
    # Same browser, same session cookie, but no token: what a forged cross-site form sends.
    response = page.request.post(
        f"{console.url}/admin/invoices/{number}/resend", form={"back": "/admin/invoices"}
    )
    assert response.status == 403
    assert "CSRF" in response.text()
    forged = page.request.post(
        f"{console.url}/admin/invoices/{number}/resend", form={"csrf": "guessed"}
    )
    assert forged.status == 403
    assert _audit(console) == before
    # The sign-in form is protected too (double-submit token).
    bare = httpx.post(
        f"{console.url}/admin/sign-in", data={"email": OPERATOR, "password": PASSWORD}
    )
    assert bare.status_code == 403
    assert "meterbill_admin" not in bare.cookies


def test_console_pages_cannot_be_framed_and_need_a_session(console: Console) -> None:
    for path in ("/admin", "/admin/users", "/admin/invoices", "/admin/jobs", "/admin/audit"):
        response = httpx.get(f"{console.url}{path}", follow_redirects=False)
        assert response.status_code == 303, path
    page = httpx.get(f"{console.url}/admin/sign-in")
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_the_trusted_proxy_header_is_off_by_default_and_honoured_when_set(
    make_console: object,
) -> None:
    console = make_console()  # type: ignore[operator]
    header = {"X-Forwarded-Email": OPERATOR}
    off = httpx.get(f"{console.url}/admin", headers=header, follow_redirects=False)
    assert off.status_code == 303
    proxied = make_console(admin_proxy_header="X-Forwarded-Email")  # type: ignore[operator]
    on = httpx.get(f"{proxied.url}/admin", headers=header, follow_redirects=False)
    assert on.status_code == 200
    assert OPERATOR in on.text
    stranger = httpx.get(
        f"{proxied.url}/admin",
        headers={"X-Forwarded-Email": "x@example.com"},
        follow_redirects=False,
    )
    assert stranger.status_code == 303


def test_the_cookie_is_secure_behind_a_tls_proxy(console: Console) -> None:
    tls = {"X-Forwarded-Proto": "https"}  # from 127.0.0.1, a proxy uvicorn trusts
    with httpx.Client(base_url=console.url, headers=tls) as client:
        form = client.get("/admin/sign-in")
        token = form.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
        client.cookies.set("meterbill_signin_csrf", token)  # a Secure cookie: not resent on http
        signed = client.post(
            "/admin/sign-in",
            data={"csrf": token, "email": OPERATOR, "password": PASSWORD, "next": "/admin"},
        )
    assert signed.status_code == 303
    (cookie,) = [
        c.lower() for c in signed.headers.get_list("set-cookie") if c.startswith("meterbill_admin=")
    ]
    assert "; secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
