"""GET /openapi.json: served without a key, valid OpenAPI 3.1, and the router's exact twin: every
route documented, every documented operation routed (so the document cannot drift)."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
from openapi_spec_validator import OpenAPIV31SpecValidator

from api.app import make_app
from api.auth import DASHBOARD_PREFIX, PUBLIC_PATHS, PUBLIC_PREFIX
from api.openapi.document import DOCUMENT
from mta.dns import Resolver
from policy.tokens import ReplyTokens
from storage.database import Pool
from tests.conftest import ApiServer, make_settings

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def routed(pool: Pool, tokens: ReplyTokens, tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route of the full application, as `opensend serve` builds it
    (development settings: the ingesters are served). aiohttp answers HEAD for every GET by
    itself; OpenAPI's GET covers it. The dashboard's HTML pages (a sub-application under
    DASHBOARD_PREFIX, signed in with its own sessions) are not part of the JSON API."""
    settings = make_settings(tmp_path)
    app = make_app(pool, settings, tokens, Resolver(settings.dns_servers))
    routes = {(route.method.lower(), route.resource.canonical) for route in app.router.routes()}
    return {
        (m, p)
        for m, p in routes
        if not (m == "head" and ("get", p) in routes) and not p.startswith(DASHBOARD_PREFIX)
    }


def documented() -> set[tuple[str, str]]:
    return {
        (method, path)
        for path, item in DOCUMENT["paths"].items()
        for method in item
        if method in METHODS
    }


def test_every_route_is_documented_and_every_operation_is_routed(
    pool: Pool, tokens: ReplyTokens, tmp_path: Path
) -> None:
    routes = routed(pool, tokens, tmp_path)
    assert routes - documented() == set(), "routes missing from api/openapi/document.py"
    assert documented() - routes == set(), (
        "operations in api/openapi/document.py that nothing serves"
    )


def test_the_operations_without_an_api_key_are_the_public_paths() -> None:
    keyless = {
        path
        for path, item in DOCUMENT["paths"].items()
        for operation in item.values()
        if operation.get("security") is not None
    }
    links = {path for path in DOCUMENT["paths"] if path.startswith(PUBLIC_PREFIX)}
    assert links and keyless == PUBLIC_PATHS | links  # signed download links carry their proof


def test_document_is_valid_openapi_3_1() -> None:
    assert DOCUMENT["openapi"].startswith("3.1.")
    errors = [str(error) for error in OpenAPIV31SpecValidator(DOCUMENT).iter_errors()]
    assert errors == []


def test_every_operation_documents_its_errors_in_resends_shape() -> None:
    for path, item in DOCUMENT["paths"].items():
        for method, operation in item.items():
            for status, response in operation["responses"].items():
                if int(status) >= 400 and path != "/healthz":
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/Error"}, (method, path, status)


async def test_document_is_served_as_json_without_an_api_key(api: ApiServer) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(api.url + "/openapi.json") as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/json"
        served = await response.json()
    assert served == json.loads(json.dumps(DOCUMENT))
