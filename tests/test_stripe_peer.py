"""The Stripe peer (tests/stripe_peer.py) answers the official SDK as Stripe would.

These tests pin what the rest of the suite relies on: localstripe's own routes still work
behind the launcher, the added routes (prices, Checkout and portal sessions) answer in
Stripe's documented shapes, failure/latency injection reaches the SDK as the matching
exception classes, and the webhook signature helper agrees with the SDK and localstripe.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar, cast

import httpx
import pytest
import stripe
from stripe.params.checkout import SessionCreateParams

try:  # `python -m pytest` from the project root, or tests/ as a package
    from tests.stripe_peer import (
        INJECTED_FAILURE_MESSAGE,
        StripePeer,
        sign_payload,
        start_stripe_peer,
    )
except ImportError:  # plain `pytest`: rootdir-less import puts tests/ itself on sys.path
    from stripe_peer import (  # type: ignore[no-redef]
        INJECTED_FAILURE_MESSAGE,
        StripePeer,
        sign_payload,
        start_stripe_peer,
    )

PEER_FILE = Path(__file__).with_name("stripe_peer.py")


@pytest.fixture(scope="module")
def peer() -> Iterator[StripePeer]:
    started = start_stripe_peer()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture(autouse=True)
def _clean_peer(peer: StripePeer) -> Iterator[None]:
    peer.reset()
    yield
    peer.clear_failures()


def make_client(peer: StripePeer, **kwargs: Any) -> stripe.StripeClient:
    # No retries: localstripe ignores Idempotency-Key, so a retried POST creates twice.
    options: dict[str, Any] = {"max_network_retries": 0, **kwargs}
    return stripe.StripeClient("sk_test_x", base_addresses={"api": peer.url}, **options)


@pytest.fixture
def client(peer: StripePeer) -> stripe.StripeClient:
    return make_client(peer)


def create_price(client: stripe.StripeClient, unit_amount: int = 1500) -> stripe.Price:
    return client.v1.prices.create(
        params={
            "unit_amount": unit_amount,
            "currency": "usd",
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro"},
            "lookup_key": "pro_monthly",
            "metadata": {"plan": "pro"},
        }
    )


# -- localstripe routes and /v1/prices ---------------------------------------------------


def test_customer_price_and_subscription(client: stripe.StripeClient, peer: StripePeer) -> None:
    customer = client.v1.customers.create(params={"email": "ann@example.com"})
    assert customer.id.startswith("cus_")

    price = create_price(client)
    assert price.id.startswith("price_")
    as_dict = price.to_dict()
    assert as_dict["object"] == "price"
    assert as_dict["unit_amount"] == 1500
    assert as_dict["recurring"]["interval"] == "month"
    assert as_dict["type"] == "recurring"
    assert client.v1.prices.retrieve(price.id).to_dict()["metadata"] == {"plan": "pro"}
    listed = client.v1.prices.list(params={"lookup_keys": ["pro_monthly"]})
    assert [p.id for p in listed.data] == [price.id]

    # localstripe subscribes only customers with a default payment method. Attaching
    # pm_card_visa returns a *new* payment method id: use that one.
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"plan": price.id}]}
    )
    assert subscription.status == "active"
    item = subscription.to_dict()["items"]["data"][0]
    assert item["plan"]["id"] == price.id  # the price's localstripe twin
    assert peer.calls("/v1/customers", "POST") == 2  # create + update
    assert peer.calls("/v1/subscriptions", "POST") == 1


def test_price_errors(client: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.prices.retrieve("price_missing")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"

    with pytest.raises(stripe.InvalidRequestError) as no_product:
        client.v1.prices.create(
            params={"unit_amount": 100, "currency": "usd", "product": "prod_missing"}
        )
    assert no_product.value.param == "product"

    create_price(client)
    with pytest.raises(stripe.InvalidRequestError, match="already uses that lookup key"):
        create_price(client)


def test_reset_empties_the_store(client: stripe.StripeClient, peer: StripePeer) -> None:
    customer = client.v1.customers.create()
    price = create_price(client)
    peer.reset()
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(customer.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.prices.retrieve(price.id)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.plans.retrieve(price.id)
    assert peer.calls("/v1/") == 3  # the three failed retrievals since the reset


# -- Checkout and billing portal sessions ------------------------------------------------


def test_checkout_session(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    price = create_price(client)
    session = client.v1.checkout.sessions.create(
        params={
            "customer": customer.id,
            "mode": "subscription",
            "line_items": [{"price": price.id, "quantity": 2}],
            "success_url": "https://app.example/billing/success",
            "cancel_url": "https://app.example/billing/cancel",
            "client_reference_id": "user-42",
            "metadata": {"user_id": "42"},
            "subscription_data": {"metadata": {"plan": "pro"}},
        }
    )
    body = session.to_dict()
    assert body["id"].startswith("cs_test_")
    assert body["object"] == "checkout.session"
    assert body["url"] == f"https://checkout.stripe.com/c/pay/{session.id}"
    assert body["customer"] == customer.id
    assert (body["mode"], body["status"], body["payment_status"]) == (
        "subscription",
        "open",
        "unpaid",
    )
    assert body["metadata"] == {"user_id": "42"}
    assert body["client_reference_id"] == "user-42"
    assert body["subscription"] is None
    assert body["livemode"] is False
    assert body["amount_total"] == 3000
    assert body["expires_at"] > body["created"]

    assert client.v1.checkout.sessions.retrieve(session.id).to_dict() == body
    expired = client.v1.checkout.sessions.expire(session.id)
    assert expired.status == "expired"


def test_checkout_sessions_list_filters_and_expire_refuses_a_paid_session(
    client: stripe.StripeClient, peer: StripePeer
) -> None:
    price = create_price(client)
    ana, bo = client.v1.customers.create(), client.v1.customers.create()

    def open_session(customer: str) -> stripe.checkout.Session:
        return client.v1.checkout.sessions.create(
            params={
                "customer": customer,
                "mode": "subscription",
                "line_items": [{"price": price.id, "quantity": 1}],
                "success_url": "https://app.example/ok",
                "subscription_data": {"metadata": {"user_id": "ana"}},
            }
        )

    first, second, other = open_session(ana.id), open_session(ana.id), open_session(bo.id)
    listed = client.v1.checkout.sessions.list({"customer": ana.id, "status": "open"})
    assert [s.id for s in listed.data] == [second.id, first.id]  # newest first
    assert client.v1.checkout.sessions.expire(first.id).status == "expired"
    assert [s.id for s in client.v1.checkout.sessions.list({"status": "open"}).data] == [
        other.id,
        second.id,
    ]
    expired = client.v1.checkout.sessions.list({"customer": ana.id, "status": "expired"})
    assert [s.id for s in expired.data] == [first.id]
    page = client.v1.checkout.sessions.list({"customer": ana.id, "limit": 1})
    assert [s.id for s in page.data] == [second.id] and page.has_more

    # An expired session cannot be paid; an open one makes its subscription when paid.
    assert peer.complete_checkout(first.id).status_code == 400
    paid = peer.complete_checkout(second.id).json()
    assert (paid["status"], paid["payment_status"]) == ("complete", "paid")
    subscription = client.v1.subscriptions.retrieve(paid["subscription"])
    assert subscription.customer == ana.id and subscription.status == "active"
    assert subscription.metadata.to_dict() == {"user_id": "ana"}
    by_subscription = client.v1.checkout.sessions.list({"subscription": subscription.id})
    assert [s.id for s in by_subscription.data] == [second.id]

    # Stripe's reference: expiring a session that is not open is an error.
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.checkout.sessions.expire(second.id)
    assert refused.value.http_status == 400 and '"complete"' in str(refused.value.user_message)
    assert peer.complete_checkout(second.id).status_code == 400  # paid once only
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.checkout.sessions.list({"status": "paid"})


def test_checkout_session_errors(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    price = create_price(client)
    base: SessionCreateParams = {
        "customer": customer.id,
        "mode": "subscription",
        "line_items": [{"price": price.id, "quantity": 1}],
        "success_url": "https://app.example/ok",
    }

    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.checkout.sessions.create(params={**base, "customer": "cus_nobody"})
    assert unknown.value.http_status == 400
    assert unknown.value.user_message == "No such customer: 'cus_nobody'"
    body = cast(dict[str, Any], unknown.value.json_body)
    assert body["error"]["type"] == "invalid_request_error"

    for missing in ("mode", "success_url"):
        params = cast(SessionCreateParams, {k: v for k, v in base.items() if k != missing})
        with pytest.raises(stripe.InvalidRequestError) as error:
            client.v1.checkout.sessions.create(params=params)
        assert error.value.param == missing

    with pytest.raises(stripe.InvalidRequestError, match="No such price"):
        client.v1.checkout.sessions.create(
            params={**base, "line_items": [{"price": "price_nope", "quantity": 1}]}
        )
    with pytest.raises(stripe.InvalidRequestError) as not_found:
        client.v1.checkout.sessions.retrieve("cs_test_nope")
    assert not_found.value.http_status == 404


def test_billing_portal_session(client: stripe.StripeClient) -> None:
    customer = client.v1.customers.create()
    portal = client.v1.billing_portal.sessions.create(
        params={"customer": customer.id, "return_url": "https://app.example/account"}
    )
    body = portal.to_dict()
    assert body["id"].startswith("bps_")
    assert body["object"] == "billing_portal.session"
    assert body["customer"] == customer.id
    assert body["return_url"] == "https://app.example/account"
    assert body["url"] == f"https://billing.stripe.com/p/session/{portal.id}"
    assert body["livemode"] is False

    with pytest.raises(stripe.InvalidRequestError, match="No such customer"):
        client.v1.billing_portal.sessions.create(params={"customer": "cus_nobody"})


# -- failure and latency injection -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (500, stripe.APIError),
        (503, stripe.APIError),
        (429, stripe.RateLimitError),
        (401, stripe.AuthenticationError),
        (403, stripe.PermissionError),
        (400, stripe.InvalidRequestError),
        (404, stripe.InvalidRequestError),
    ],
)
def test_injected_status_maps_to_sdk_exception(
    client: stripe.StripeClient, peer: StripePeer, status: int, expected: type[Exception]
) -> None:
    peer.fail("/v1/customers", status=status, count=1)
    with pytest.raises(expected) as error:
        client.v1.customers.create()
    assert isinstance(error.value, stripe.StripeError)
    assert error.value.http_status == status
    assert error.value.user_message == INJECTED_FAILURE_MESSAGE
    # count=1: the next request goes through to localstripe.
    assert client.v1.customers.create().id.startswith("cus_")
    assert peer.calls("/v1/customers", "POST") == 2


def test_injected_card_error(client: stripe.StripeClient, peer: StripePeer) -> None:
    peer.fail("/v1/customers", status=402, error_type="card_error")
    with pytest.raises(stripe.CardError):
        client.v1.customers.create()


def test_failure_applies_to_added_routes_and_clears(
    client: stripe.StripeClient, peer: StripePeer
) -> None:
    customer = client.v1.customers.create()
    peer.fail("/v1/checkout/sessions", status=500)  # unlimited until cleared
    params: SessionCreateParams = {
        "customer": customer.id,
        "mode": "setup",
        "success_url": "https://app.example/ok",
    }
    for _ in range(2):
        with pytest.raises(stripe.APIError):
            client.v1.checkout.sessions.create(params=params)
    peer.clear_failures()
    assert client.v1.checkout.sessions.create(params=params).status == "open"
    assert peer.calls("/v1/checkout/sessions", "POST") == 3


def test_sdk_retries_5xx_only_when_asked(peer: StripePeer) -> None:
    # SDK 16: a StripeClient built without max_network_retries does not retry (None counts
    # as 0); only the global `stripe.max_network_retries` (2) applies to stripe.Customer &co.
    peer.fail("/v1/customers", status=500, count=2)
    default_client = stripe.StripeClient("sk_test_x", base_addresses={"api": peer.url})
    with pytest.raises(stripe.APIError):
        default_client.v1.customers.create()
    assert peer.calls("/v1/customers", "POST") == 1

    # With retries, each resend reaches the peer (and localstripe would not deduplicate a
    # retried create that had succeeded: it ignores Idempotency-Key).
    peer.reset()
    peer.fail("/v1/customers", status=500, count=2)
    make_client(peer, max_network_retries=2).v1.customers.create()
    assert peer.calls("/v1/customers", "POST") == 3


@pytest.mark.parametrize("http_client_kind", ["requests", "httpx"])
def test_delay_times_out_short_client_timeout(peer: StripePeer, http_client_kind: str) -> None:
    http_client: stripe.HTTPClient
    if http_client_kind == "requests":
        http_client = stripe.RequestsClient(timeout=0.5)
    else:
        # HTTPXClient refuses synchronous calls unless allow_sync_methods=True.
        http_client = stripe.HTTPXClient(timeout=0.5, allow_sync_methods=True)
    slow_client = make_client(peer, http_client=http_client)

    # A failing slow answer: the client gives up first.
    peer.fail("/v1/customers", status=500, delay=1.5, count=1, method="POST")
    started = time.monotonic()
    with pytest.raises(stripe.APIConnectionError):
        slow_client.v1.customers.create()
    assert time.monotonic() - started < 1.4

    # status < 400 = slow but successful: the write still happens after the client gave up.
    peer.fail("/v1/customers", status=200, delay=1.0, count=1, method="POST")
    with pytest.raises(stripe.APIConnectionError):
        slow_client.v1.customers.create()
    deadline = time.monotonic() + 5
    customers: list[Any] = []
    while time.monotonic() < deadline and not customers:
        customers = list(make_client(peer).v1.customers.list().data)
        time.sleep(0.1)
    assert len(customers) == 1
    assert peer.calls("/v1/customers", "POST") == 2


# -- webhooks and signatures --------------------------------------------------------------


def test_sign_payload_is_accepted_by_the_sdk() -> None:
    secret = "whsec_test_secret"
    payload = json.dumps({"id": "evt_1", "object": "event", "type": "invoice.paid"}).encode()
    header = sign_payload(payload, secret)
    assert stripe.WebhookSignature.verify_header(payload.decode(), header, secret, 300)
    event = stripe.Webhook.construct_event(payload, header, secret)
    assert event.type == "invoice.paid"

    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload.decode(), header, "whsec_other", 300)
    stale = sign_payload(payload, secret, timestamp=int(time.time()) - 3600)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(payload.decode(), stale, secret, 300)


class _Receiver(BaseHTTPRequestHandler):
    deliveries: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.deliveries.append((self.headers["Stripe-Signature"], body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_registered_webhook_is_delivered_signed(
    client: stripe.StripeClient, peer: StripePeer
) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Receiver.deliveries.clear()
    secret = "whsec_peer"

    def events_for(customer_id: str) -> list[tuple[str, bytes]]:
        # localstripe reads the registrations when it sends (about 1 s after the change),
        # so events of earlier tests may reach this receiver too: select ours.
        found = []
        for signature, body in list(_Receiver.deliveries):
            event = json.loads(body)
            if event["type"] != "customer.created" or event["data"]["object"]["id"] == customer_id:
                found.append((signature, body))
        return found

    try:
        peer.register_webhook(
            f"http://127.0.0.1:{server.server_address[1]}/hook",
            secret,
            events=["customer.created"],
        )
        customer = client.v1.customers.create()
        client.v1.products.create(params={"name": "filtered out by events=[...]"})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not events_for(customer.id):
            time.sleep(0.1)
        time.sleep(1.0)  # leave time for a (wrongly) unfiltered product.created
    finally:
        peer.clear_webhooks()
        server.shutdown()
        server.server_close()

    ours = events_for(customer.id)
    assert len(ours) == 1
    signature, body = ours[0]
    event = stripe.Webhook.construct_event(body, signature, secret)
    assert event.type == "customer.created"
    assert event.data.object.id == customer.id
    # sign_payload reproduces localstripe's header byte for byte for the same timestamp.
    timestamp = int(signature.split(",")[0].removeprefix("t="))
    assert sign_payload(body, secret, timestamp) == signature


# -- launcher entry points ----------------------------------------------------------------


def _start_and_probe(cmd: list[str], cwd: Path) -> None:
    process = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode().split()
        assert line[0] == "READY", line
        response = httpx.get(f"http://127.0.0.1:{line[1]}/_config/calls")
        assert response.json() == {"count": 0}
    finally:
        process.terminate()
        process.communicate(timeout=10)
    assert process.returncode == 0


def test_launcher_runs_as_module_and_as_file(tmp_path: Path) -> None:
    project_root = PEER_FILE.parent.parent
    _start_and_probe([sys.executable, "-m", "tests.stripe_peer", "--port", "0"], project_root)
    _start_and_probe([sys.executable, str(PEER_FILE), "--port", "0"], tmp_path)


# -- idempotency, subscription price changes, subscription schedules ---------------------


def _monthly(client: stripe.StripeClient, amount: int) -> str:
    price = client.v1.prices.create(
        params={
            "unit_amount": amount,
            "currency": "eur",
            "recurring": {"interval": "month"},
            "product_data": {"name": f"plan {amount}"},
        }
    )
    return str(price.id)


def _subscribed(
    client: stripe.StripeClient, price: str, card: str = "pm_card_visa"
) -> dict[str, Any]:
    customer = client.v1.customers.create()
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"plan": price}]}
    )
    if card != "pm_card_visa":
        other = client.v1.payment_methods.attach(card, params={"customer": customer.id})
        client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": other.id}}
        )
    return sub.to_dict()


def test_an_idempotency_key_replays_the_first_answer(client: stripe.StripeClient) -> None:
    first = client.v1.customers.create(
        params={"email": "a@example.com"}, options={"idempotency_key": "k-1"}
    )
    again = client.v1.customers.create(
        params={"email": "a@example.com"}, options={"idempotency_key": "k-1"}
    )
    assert again.id == first.id
    assert again.last_response.headers.get("idempotent-replayed") == "true"
    assert len(client.v1.customers.list().data) == 1
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(
            params={"email": "b@example.com"}, options={"idempotency_key": "k-1"}
        )


def test_a_key_in_use_by_a_running_request_is_409(peer: StripePeer) -> None:
    peer.fail("/v1/customers", status=200, delay=1.0, count=1)  # Stripe takes 1 s
    headers = {"Idempotency-Key": "k-busy"}
    auth = ("sk_test_x", "")
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(
            httpx.post, f"{peer.url}/v1/customers", headers=headers, auth=auth, timeout=10
        )
        time.sleep(0.3)
        busy = httpx.post(f"{peer.url}/v1/customers", headers=headers, auth=auth)
        first = slow.result()
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_key_in_use"
    assert first.status_code == 200
    later = httpx.post(f"{peer.url}/v1/customers", headers=headers, auth=auth)
    assert later.status_code == 200 and later.json()["id"] == first.json()["id"]
    assert later.headers["Idempotent-Replayed"] == "true"


def test_a_price_change_prorates_and_invoices_now(client: stripe.StripeClient) -> None:
    cheap, dear = _monthly(client, 1000), _monthly(client, 3000)
    sub = _subscribed(client, cheap)
    item = sub["items"]["data"][0]["id"]
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.update(
            sub["id"], params={"items": [{"id": item, "price": dear}], "proration_behavior": "x"}
        )
    updated = client.v1.subscriptions.update(
        sub["id"],
        params={
            "items": [{"id": item, "price": dear}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "pending_if_incomplete",
        },
    ).to_dict()
    assert updated["items"]["data"][0]["id"] == item  # the item keeps its id
    assert updated["items"]["data"][0]["price"]["id"] == dear
    invoice = client.v1.invoices.retrieve(updated["latest_invoice"]).to_dict()
    assert invoice["status"] == "paid" and 1990 <= invoice["total"] <= 2000
    amounts = sorted(line["amount"] for line in invoice["lines"]["data"])
    assert amounts[0] < 0 < amounts[1]  # unused time credited, remaining time charged


def test_a_declined_price_change_stays_pending(client: stripe.StripeClient) -> None:
    cheap, dear = _monthly(client, 1000), _monthly(client, 3000)
    sub = _subscribed(client, cheap, card="pm_card_chargeCustomerFail")
    item = sub["items"]["data"][0]["id"]
    with pytest.raises(stripe.InvalidRequestError):  # not a pending-update parameter
        client.v1.subscriptions.update(
            sub["id"],
            params={
                "items": [{"id": item, "price": dear}],
                "payment_behavior": "pending_if_incomplete",
                "cancel_at_period_end": True,
            },
        )
    updated = client.v1.subscriptions.update(
        sub["id"],
        params={
            "items": [{"id": item, "price": dear}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "pending_if_incomplete",
        },
    ).to_dict()
    assert updated["status"] == "active"
    assert updated["items"]["data"][0]["price"]["id"] == cheap
    assert updated["pending_update"]["subscription_items"][0]["price"] == dear
    assert client.v1.invoices.retrieve(updated["latest_invoice"]).status == "open"


def test_a_schedule_from_a_subscription(client: stripe.StripeClient) -> None:
    cheap, dear = _monthly(client, 1000), _monthly(client, 3000)
    sub = _subscribed(client, dear)
    schedule = client.v1.subscription_schedules.create(
        params={"from_subscription": sub["id"]}
    ).to_dict()
    phase = schedule["phases"][0]
    assert (phase["start_date"], phase["end_date"]) == (
        sub["current_period_start"],
        sub["current_period_end"],
    )
    assert client.v1.subscriptions.retrieve(sub["id"]).to_dict()["schedule"] == schedule["id"]
    with pytest.raises(stripe.InvalidRequestError):  # one schedule per subscription
        client.v1.subscription_schedules.create(params={"from_subscription": sub["id"]})
    updated = client.v1.subscription_schedules.update(
        schedule["id"],
        params={
            "end_behavior": "release",
            "phases": [
                {
                    "items": [{"price": dear, "quantity": 1}],
                    "start_date": phase["start_date"],
                    "end_date": phase["end_date"],
                },
                {"items": [{"price": cheap, "quantity": 1}], "duration": {"interval": "month"}},
            ],
        },
    ).to_dict()
    assert [p["items"][0]["price"] for p in updated["phases"]] == [dear, cheap]
    assert updated["phases"][1]["start_date"] == sub["current_period_end"]
    with pytest.raises(stripe.InvalidRequestError):  # cancel through the schedule instead
        client.v1.subscriptions.update(sub["id"], params={"cancel_at_period_end": True})
    released = client.v1.subscription_schedules.release(schedule["id"]).to_dict()
    assert released["status"] == "released" and released["released_subscription"] == sub["id"]
    assert not client.v1.subscriptions.retrieve(sub["id"]).to_dict().get("schedule")
    canceling = client.v1.subscriptions.update(sub["id"], params={"cancel_at_period_end": True})
    assert canceling.cancel_at_period_end is True
