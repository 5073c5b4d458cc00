"""The service's surface: health, docs, and JSON errors everywhere."""

from __future__ import annotations

from tests.conftest import Service


def test_health_and_readiness(service: Service) -> None:
    assert service.client.get("/healthz").json() == {"status": "ok"}
    assert service.client.get("/readyz").json()["status"] == "ready"


def test_openapi_describes_every_seed_endpoint(service: Service) -> None:
    spec = service.client.get("/openapi.json").json()
    for path in ("checkout", "portal", "status", "consumption", "webhook"):
        assert f"/api/v1/billing/{path}" in spec["paths"]
    assert "swagger" in service.client.get("/docs").text.lower()


def test_unknown_path_and_wrong_method_answer_json(service: Service) -> None:
    missing = service.client.get("/api/v1/nothing")
    assert missing.status_code == 404
    assert missing.json() == {"error": "Ressource introuvable", "code": "not_found"}
    wrong = service.client.delete("/api/v1/billing/status")
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "method_not_allowed"


def test_errors_speak_english_when_asked(service: Service) -> None:
    english = service.client.get(
        "/api/v1/billing/status", headers={"Accept-Language": "en-GB,en;q=0.9,fr;q=0.5"}
    )
    assert english.json() == {"error": "Authentication required", "code": "unauthorized"}
    french = service.client.get(
        "/api/v1/billing/status", headers={"Accept-Language": "fr-FR,en;q=0.3"}
    )
    assert french.json()["error"] == "Authentification requise"
