"""JSON Schemas (2020-12) of the API's resources and the OpenAPI 3.1 document built from routes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from dashboard.reports.models import MODELS
from dashboard.reports.rollup import DIMENSIONS
from dashboard.webhooks import EVENTS

Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(kind: str, **extra: Any) -> Schema:
    return {"type": [kind, "null"], **extra}


DATE_TIME: Final[Schema] = {"type": "string", "format": "date-time"}
DATE: Final[Schema] = {"type": "string", "format": "date"}


def _object(properties: dict[str, Schema], required: Sequence[str] | None = None) -> Schema:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required if required is not None else properties),
        "additionalProperties": False,
    }


def page_of(item: str) -> Schema:
    return _object(
        {"data": {"type": "array", "items": ref(item)}, "next_cursor": nullable("string")}
    )


METRICS: Final[Schema] = _object(
    {
        "calls": {"type": "number", "minimum": 0},
        "answered": {"type": "number", "minimum": 0},
        "missed": {"type": "number", "minimum": 0},
        "answered_rate": nullable("number", minimum=0, maximum=1),
        "missed_rate": nullable("number", minimum=0, maximum=1),
        "average_duration_s": nullable("number", minimum=0),
        "first_time_callers": {"type": "number", "minimum": 0},
        "sales": {"type": "number", "minimum": 0},
        "leads": {"type": "number", "minimum": 0},
        "sessions": {"type": "integer", "minimum": 0},
        "calls_per_1000_sessions": nullable("number", minimum=0),
    }
)
MONEY: Final[Schema] = {
    "type": "object",
    "description": "Amounts by ISO 4217 currency, as decimal strings.",
    "additionalProperties": {"type": "string", "pattern": r"^\d+\.\d{2}$"},
    "propertyNames": {"pattern": "^[A-Z]{3}$"},
}
PERIOD: Final[Schema] = _object({"from": DATE, "to": DATE})

SESSION_PROPERTIES: Final[dict[str, Schema]] = {
    "id": {"type": "string"},
    "site_id": {"type": "integer"},
    "started_at": DATE_TIME,
    "last_seen_at": DATE_TIME,
    "consent": {"type": "boolean"},
    "returning_visitor": {"type": "boolean"},
    "landing_url": {"type": "string"},
    "referrer": nullable("string"),
    "channel": {"type": "string"},
    "source": nullable("string"),
    "medium": nullable("string"),
    "campaign": nullable("string"),
    "term": nullable("string"),
    "gclid": nullable("string"),
    "country": nullable("string"),
    "device": nullable("string"),
    "pageview_count": {"type": "integer", "minimum": 0},
}

COMPONENTS: Final[dict[str, Schema]] = {
    "Error": _object(
        {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "detail": {"type": "object"},
                },
                "required": ["code", "message"],
            }
        }
    ),
    "Site": _object(
        {
            "id": {"type": "integer"},
            "name": {"type": "string"},
            "domain": {"type": "string"},
            "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
            "timezone": {"type": "string"},
            "language": {"type": "string"},
            "site_key": {"type": "string"},
            "consent_mode": {"type": "string", "enum": ["required", "not_required"]},
            "record_calls": {"type": "boolean"},
            "created_at": DATE_TIME,
        }
    ),
    "TrackingNumber": _object(
        {
            "id": {"type": "integer"},
            "site_id": {"type": "integer"},
            "e164": {"type": "string", "pattern": r"^\+[1-9]\d{1,14}$"},
            "provider": {"type": "string"},
            "kind": {"type": "string", "enum": ["pool", "source"]},
            "rule_type": nullable("string"),
            "rule_value": nullable("string"),
            "state": {"type": "string"},
            "created_at": DATE_TIME,
        }
    ),
    "Session": _object(SESSION_PROPERTIES),
    # Written out rather than allOf: each part's additionalProperties would refuse the other's.
    "SessionDetail": _object(
        {
            **SESSION_PROPERTIES,
            "pageviews": {"type": "array", "items": ref("Pageview")},
            "cart": {"oneOf": [ref("Cart"), {"type": "null"}]},
        }
    ),
    "Pageview": _object(
        {
            "url": {"type": "string"},
            "title": nullable("string"),
            "viewed_at": DATE_TIME,
            "duration_ms": {"type": "integer", "minimum": 0},
        }
    ),
    "Cart": _object(
        {
            "items": {"type": "array", "items": {"type": "object"}},
            "total": nullable("string"),
            "currency": nullable("string"),
            "item_count": {"type": "integer", "minimum": 0},
            "updated_at": DATE_TIME,
        }
    ),
    "Call": _object(
        {
            "id": {"type": "integer"},
            "site_id": {"type": "integer"},
            "direction": {"type": "string", "enum": ["inbound", "outbound"]},
            "caller": {
                "type": ["string", "null"],
                "description": "E.164, or masked (+33 6 •• •• •• 78) for tokens without caller_numbers.",
            },
            "first_time_caller": {"type": "boolean"},
            "tracking_number": {"type": "string"},
            "started_at": DATE_TIME,
            "answered_at": nullable("string", format="date-time"),
            "ended_at": nullable("string", format="date-time"),
            "status": {"type": "string"},
            "outcome": nullable("string"),
            "duration_s": nullable("integer", minimum=0),
            "outcome_tag": nullable("string"),
            "channel": nullable("string"),
            "source": nullable("string"),
            "medium": nullable("string"),
            "campaign": nullable("string"),
            "term": nullable("string"),
            "session_id": nullable("string"),
            "attribution_method": {"type": "string"},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
            "recorded": {"type": "boolean"},
            "credit": {
                "type": "number",
                "minimum": 0,
                "maximum": 1,
                "description": "Share of the call credited to the filtered dimension value (1 without a filter).",
            },
        }
    ),
    "CallUpdate": {
        "type": "object",
        "properties": {
            "outcome_tag": {
                "type": ["string", "null"],
                "enum": ["sale", "lead", "no_answer", "spam", None],
            }
        },
        "required": ["outcome_tag"],
        "additionalProperties": False,
    },
    "ContactRequest": _object(
        {
            "id": {"type": "integer"},
            "site_id": {"type": "integer"},
            "session_id": nullable("string"),
            "kind": {"type": "string"},
            "phone": {"type": "string"},
            "status": {"type": "string", "enum": ["open", "claimed", "closed"]},
            "outcome_tag": nullable("string"),
            "outside_hours": {"type": "boolean"},
            "created_at": DATE_TIME,
            "closed_at": nullable("string", format="date-time"),
            "call_id": nullable("integer"),
        }
    ),
    # The `data` of webhook events (dashboard.webhooks.CallData and ContactData).
    "CallEventData": _object(
        {
            "id": {"type": "integer"},
            "site_id": {"type": "integer"},
            "direction": {"type": "string"},
            "caller": nullable("string"),
            "tracking_number": {"type": "string"},
            "started_at": DATE_TIME,
            "answered_at": nullable("string", format="date-time"),
            "ended_at": nullable("string", format="date-time"),
            "status": {"type": "string"},
            "outcome": nullable("string"),
            "duration_s": nullable("integer"),
            "channel": nullable("string"),
            "source": nullable("string"),
            "medium": nullable("string"),
            "campaign": nullable("string"),
            "term": nullable("string"),
            "attribution_method": {"type": "string"},
            "confidence": {"type": "number"},
            "session_id": nullable("string"),
            "outcome_tag": nullable("string"),
        }
    ),
    "ContactEventData": _object(
        {
            "id": {"type": "integer"},
            "site_id": {"type": "integer"},
            "session_id": nullable("string"),
            "kind": {"type": "string"},
            "phone": {"type": "string"},
            "status": {"type": "string"},
            "outcome": nullable("string"),
            "created_at": nullable("string", format="date-time"),
            "closed_at": nullable("string", format="date-time"),
            "call_id": nullable("integer"),
        }
    ),
    "Metrics": METRICS,
    "Money": MONEY,
    "ReportRow": _object(
        {
            "value": {"type": "string"},
            "calls_display": {
                "type": "number",
                "description": "Calls rounded to tenths so the column adds up.",
            },
            "current": ref("Metrics"),
            "previous": {"oneOf": [ref("Metrics"), {"type": "null"}]},
            "cost": ref("Money"),
            "cost_per_call": ref("Money"),
        }
    ),
    "Report": _object(
        {
            "dimension": {"type": "string", "enum": list(DIMENSIONS)},
            "model": {"type": "string", "enum": list(MODELS)},
            "period": PERIOD,
            "previous_period": {"oneOf": [PERIOD, {"type": "null"}]},
            "site_ids": {"type": "array", "items": {"type": "integer"}},
            "rows": {"type": "array", "items": ref("ReportRow")},
            "total": ref("ReportRow"),
        }
    ),
    "TimeSeries": _object(
        {
            "period": PERIOD,
            "dates": {"type": "array", "items": DATE},
            "calls": {"type": "array", "items": {"type": "number", "minimum": 0}},
            "previous_calls": {"type": "array", "items": {"type": "number", "minimum": 0}},
        }
    ),
    "WebhookEndpoint": _object(
        {
            "id": {"type": "integer"},
            "url": {"type": "string", "format": "uri"},
            "events": {"type": "array", "items": {"type": "string", "enum": list(EVENTS)}},
            "active": {"type": "boolean"},
            "created_at": DATE_TIME,
            "secret": {"type": "string", "description": "Only in the answer to the creation."},
        },
        required=["id", "url", "events", "active", "created_at"],
    ),
    "WebhookEndpointCreate": {
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri", "maxLength": 2000},
            "events": {
                "type": "array",
                "items": {"type": "string", "enum": list(EVENTS)},
                "minItems": 1,
            },
            "description": {"type": "string", "maxLength": 200},
        },
        "required": ["url", "events"],
        "additionalProperties": False,
    },
    "CostRow": {
        "type": "object",
        "properties": {
            "date": DATE,
            "channel": {"type": "string"},
            "source": {"type": "string"},
            "medium": {"type": "string"},
            "campaign": {"type": "string"},
            "cost": {"type": ["string", "number"]},
            "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
        },
        "required": ["date", "cost", "currency"],
        "additionalProperties": False,
    },
    "CostImport": {
        "type": "object",
        "properties": {
            "site_id": {"type": ["integer", "null"]},
            "rows": {"type": "array", "items": ref("CostRow"), "minItems": 1, "maxItems": 100000},
        },
        "required": ["rows"],
        "additionalProperties": False,
    },
    "CostImportResult": _object({"import_id": {"type": "string"}, "rows": {"type": "integer"}}),
}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "query" or "path"
    schema: Schema
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Route:
    """One API operation: the handler and everything the OpenAPI document says about it."""

    method: str
    path: str
    handler: Any
    operation_id: str
    summary: str
    tag: str
    scope: str = "read"
    params: tuple[Param, ...] = ()
    response: Schema | None = None
    status: int = 200
    body: Schema | None = None
    errors: tuple[int, ...] = field(default=(400, 401, 404))


def _error_response(description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": ref("Error")}}}


def _webhooks() -> dict[str, Any]:
    """Describe the events Calltrack posts to webhook endpoints (OpenAPI 3.1 `webhooks`)."""
    described: dict[str, Any] = {}
    for event in (*EVENTS, "webhook.test"):
        data = (
            ref("CallEventData")
            if event.startswith("call.")
            else ref("ContactEventData")
            if event.startswith("contact.")
            else {"type": "object"}
        )
        described[event] = {
            "post": {
                "summary": f"The {event} event",
                "description": (
                    "Signed with `Calltrack-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "
                    '"<t>.<body>")>`. Answer 2xx within 10 s; anything else is retried with '
                    "exponential backoff (30 s doubling, at most 2 h apart) for 25 hours."
                ),
                "parameters": [
                    {
                        "name": "Calltrack-Signature",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "id": {"type": "string"},
                                    "type": {"const": event},
                                    "created_at": DATE_TIME,
                                    "account_id": {"type": "integer"},
                                    "data": data,
                                },
                                "required": ["id", "type", "created_at", "account_id", "data"],
                            }
                        }
                    },
                },
                "responses": {"2XX": {"description": "Received."}},
            }
        }
    return described


ERROR_TEXT: Final = {
    400: "Invalid input (machine-readable code in error.code).",
    401: "Missing, unknown or revoked bearer token.",
    403: "The token's scope does not allow this operation.",
    404: "No such resource in the token's account.",
    413: "The body is too large.",
}


def openapi_document(routes: Sequence[Route], server_url: str) -> Schema:
    """Build the OpenAPI 3.1 document of these routes."""
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        operation: dict[str, Any] = {
            "operationId": route.operation_id,
            "summary": route.summary,
            "tags": [route.tag],
            "security": [{"bearer": [route.scope]}],
            "parameters": [
                {
                    "name": p.name,
                    "in": p.where,
                    "required": p.required or p.where == "path",
                    "schema": p.schema,
                    **({"description": p.description} if p.description else {}),
                }
                for p in route.params
            ],
            "responses": {},
        }
        if route.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": route.body}},
            }
        if route.response is None:
            operation["responses"][str(route.status)] = {"description": "Done."}
        else:
            operation["responses"][str(route.status)] = {
                "description": "OK",
                "content": {"application/json": {"schema": route.response}},
            }
        errors = set(route.errors) | ({403} if route.scope == "write" else set())
        for status in sorted(errors):
            operation["responses"][str(status)] = _error_response(ERROR_TEXT[status])
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Calltrack API",
            "version": "1.0.0",
            "description": (
                "Calls, sessions, contact requests and reports of one account. Authenticate with "
                "`Authorization: Bearer ct_...` (create a token with `calltrack token create`). "
                "Lists are paginated: pass `next_cursor` back as `cursor`. Errors are "
                '`{"error": {"code", "message"}}`. Credits are fractions of calls under the '
                "chosen attribution model; every model distributes the same total."
            ),
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "webhooks": _webhooks(),
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A per-account token; scope read (GET) or write (everything).",
                }
            },
        },
    }
