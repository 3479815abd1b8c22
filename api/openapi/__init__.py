"""The OpenAPI document of every route, served at /openapi.json.
May import api's root modules and its route subpackages, policy and storage."""
