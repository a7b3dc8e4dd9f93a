"""LiteLLM's spend API over the ledger (``spend_logs``): ``GET /spend/logs``, one row per request with the field
names of LiteLLM's SpendLogs, and ``GET /global/spend/report``, totals per day, key, team, user, customer, model
or provider. Both answer JSON, or CSV with ``?format=csv``.

Who sees what is decided here, from the caller's principal (see :func:`decide_scope`)::

    proxy admins, proxy-admin viewers   every row
    a key whose owner is a user         that user's rows; with team_id=<team>, the team's rows if they
                                        administer it (else their own rows in it)
    a key without an owner              the rows made with that key

Prompts and responses (``messages``, ``response``) are shown to proxy admins only. Differences from LiteLLM:
``/spend/logs`` pages (``page``, ``page_size``, at most 1000 rows) instead of returning every row, and returns rows
whether or not dates are given (LiteLLM's per-day summary, ``summarize=true``, is not implemented); the report is
one flat list of groups rather than LiteLLM's nested per-day shape.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from lockgate.asgi import Request
from lockgate.auth import Principal
from lockgate.errors import BadRequest, PermissionDenied
from lockgate.keys import hash_key
from lockgate.storage.base import ReportGroup, SpendLogRow

if TYPE_CHECKING:
    from lockgate.app import Gateway

__all__ = [
    "LOG_COLUMNS", "REPORT_GROUPS", "Scope", "decide_scope", "logs", "parse_date", "parse_page", "report",
    "report_row", "to_csv", "to_litellm",
]  # fmt: skip

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100

# LiteLLM's group_by names: what the store groups by, and the name the group's value takes in each result.
REPORT_GROUPS: dict[str, tuple[ReportGroup, str]] = {
    "team": ("team", "team_id"),
    "customer": ("end_user", "customer"),
    "api_key": ("key", "api_key"),
    "model": ("model", "model"),
    "provider": ("provider", "provider"),
    "day": ("day", "group_by_day"),
    "user": ("user", "user_id"),
}
# LiteLLM's call_type for the routes that write spend rows.
_CALL_TYPES = {
    "/v1/chat/completions": "acompletion",
    "/chat/completions": "acompletion",
    "/v1/embeddings": "aembedding",
    "/embeddings": "aembedding",
    "/v1/messages": "anthropic_messages",
}
LOG_COLUMNS = (  # the CSV export's columns (a JSON row has these and more)
    "request_id", "call_type", "api_key", "key_alias", "spend", "cost_estimated", "prompt_tokens",
    "completion_tokens", "total_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens", "startTime",
    "endTime", "completionStartTime", "latency_ms", "ttft_ms", "model", "model_group", "model_id",
    "custom_llm_provider", "user", "team_id", "organization_id", "end_user", "status", "status_code", "error_type",
    "stream", "client_disconnected", "route", "metadata",
)  # fmt: skip
_CONTENT_COLUMNS = ("messages", "response")
_REPORT_TOTALS = ("spend", "requests", "prompt_tokens", "completion_tokens", "total_tokens")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DECODED_PLUS = re.compile(r"(T[\d:.]+) (\d{2}(?::?\d{2})?)$")
_HASH = re.compile(r"[0-9a-f]{64}")
_CSV = b"text/csv; charset=utf-8"


# --- pure parts ------------------------------------------------------------------------------------------


def parse_date(value: str, *, param: str, end: bool = False) -> datetime:
    """A query's date: ``YYYY-MM-DD`` names the whole UTC day (its start; with ``end``, the next day's start, so
    that the end date is included); an ISO-8601 time is taken as given (UTC when it names no zone)."""
    value = _DECODED_PLUS.sub(r"\1+\2", value)  # an unencoded "+02:00" arrives as " 02:00"
    try:
        if _DATE.fullmatch(value):
            day = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadRequest(f"'{param}' must be a date (YYYY-MM-DD) or an ISO-8601 time.", param=param) from None
    return moment if moment.utcoffset() is not None else moment.replace(tzinfo=UTC)


def parse_page(query: dict[str, str]) -> tuple[int, int]:
    """``page`` (from 1) and ``page_size`` (1 to :data:`MAX_PAGE_SIZE`)."""
    try:
        page, size = int(query.get("page", "1")), int(query.get("page_size", str(DEFAULT_PAGE_SIZE)))
    except ValueError:
        raise BadRequest("'page' and 'page_size' must be numbers.") from None
    return max(page, 1), min(max(size, 1), MAX_PAGE_SIZE)


@dataclass(frozen=True, slots=True)
class Scope:
    """The filters a caller's query runs with, after :func:`decide_scope`; ``content``: may see prompts."""

    key_hash: str | None
    user_id: str | None
    team_id: str | None
    content: bool


def decide_scope(
    p: Principal, *, key_hash: str | None, user_id: str | None, team_id: str | None, team_admin: bool
) -> Scope:
    """The filters for what ``p`` asked (``team_admin``: whether ``p`` administers ``team_id``); a filter only ever
    narrows what the caller may see. :class:`PermissionDenied` for a user or key named that is not the caller's."""
    if p.sees_all:
        return Scope(key_hash, user_id, team_id, content=p.is_admin)
    if p.user_id is not None:
        if team_id is not None and team_admin:
            return Scope(key_hash, user_id, team_id, content=False)
        if user_id not in (None, p.user_id):
            raise PermissionDenied("You may see only your own spend (or that of the teams you administer).")
        return Scope(key_hash, p.user_id, team_id, content=False)
    if p.key is not None:
        if key_hash not in (None, p.key.token_hash):
            raise PermissionDenied("A key without an owner may see only its own spend.")
        return Scope(p.key.token_hash, user_id, team_id, content=False)
    raise PermissionDenied("Not allowed to see spend.")


def to_litellm(row: SpendLogRow, *, content: bool) -> dict[str, Any]:
    """One ledger row as LiteLLM's SpendLogs shows it, plus lockgate's own fields; ``messages`` and ``response``
    only with ``content``. The row's metadata cannot override the fields lockgate sets in it."""
    start = row.started_at.astimezone(UTC)
    end = start + timedelta(milliseconds=row.latency_ms)
    first = start + timedelta(milliseconds=row.ttft_ms) if row.ttft_ms is not None else end
    tags = row.metadata.get("tags")
    out: dict[str, Any] = {
        "request_id": row.request_id,
        "call_type": _CALL_TYPES.get(row.route, row.route),
        "api_key": row.key_hash or "",
        "key_alias": row.key_alias,
        "spend": row.cost,
        "cost_estimated": row.cost_estimated,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.total_tokens,
        "cache_read_tokens": row.cache_read_tokens,
        "cache_write_tokens": row.cache_write_tokens,
        "reasoning_tokens": row.reasoning_tokens,
        "startTime": start.isoformat(),
        "endTime": end.isoformat(),
        "completionStartTime": first.isoformat(),
        "latency_ms": row.latency_ms,
        "ttft_ms": row.ttft_ms,
        "model": row.model or "",
        "model_group": row.model_group or "",
        "model_id": row.deployment_id or "",
        "custom_llm_provider": row.provider or "",
        "api_base": "",  # never shown: upstream addresses stay inside the gateway
        "user": row.user_id or "",
        "team_id": row.team_id,
        "organization_id": row.organization_id,
        "end_user": row.end_user or "",
        "status": "success" if row.status < 400 else "failure",
        "status_code": row.status,
        "error_type": row.error_type,
        "stream": row.stream,
        "client_disconnected": row.client_disconnected,
        "route": row.route,
        "cache_hit": "False",
        "cache_key": "",
        "request_tags": tags if isinstance(tags, list) else [],
        "requester_ip_address": None,
        "metadata": {
            **row.metadata,
            "user_api_key": row.key_hash,
            "user_api_key_alias": row.key_alias,
            "user_api_key_user_id": row.user_id,
            "user_api_key_team_id": row.team_id,
            "user_api_key_org_id": row.organization_id,
        },
    }
    if content:
        out["messages"] = row.messages if row.messages is not None else {}
        out["response"] = row.response if row.response is not None else {}
    return out


def report_row(group_by: str, group: dict[str, Any]) -> dict[str, Any]:
    """One group of ``spend_report`` as the API shows it: its value under LiteLLM's name for it, and the totals."""
    return {
        REPORT_GROUPS[group_by][1]: group["group"],
        "spend": group["cost"],
        "requests": group["requests"],
        "prompt_tokens": group["prompt_tokens"],
        "completion_tokens": group["completion_tokens"],
        "total_tokens": group["total_tokens"],
    }


def _cell(value: Any) -> Any:
    """A CSV cell: JSON for lists and dicts; text a spreadsheet would run as a formula is quoted with ``'``."""
    if isinstance(value, dict | list):
        value = orjson.dumps(value).decode()
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def to_csv(columns: tuple[str, ...], rows: list[dict[str, Any]]) -> bytes:
    """The rows as CSV with a header line, one column each of ``columns``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in columns])
    return out.getvalue().encode()


# --- handlers ----------------------------------------------------------------------------------------------


def _principal(req: Request) -> Principal:
    if req.principal is None:  # pragma: no cover - the route table authenticates every non-public route
        raise PermissionDenied("Not authenticated.")
    return req.principal


def _query(req: Request) -> dict[str, str]:
    raw = parse_qs(req.scope.get("query_string", b"").decode("latin-1"))
    return {name: values[0] for name, values in raw.items() if values and values[0]}


def _key_hash(value: str | None) -> str | None:
    """A key named by itself (``sk-...``) or by its hash."""
    if value is None:
        return None
    return value if _HASH.fullmatch(value) else hash_key(value)


def _format(query: dict[str, str]) -> str:
    fmt = query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise BadRequest("'format' must be json or csv.", param="format")
    return fmt


async def _scope(gw: Gateway, p: Principal, query: dict[str, str], user_param: str) -> Scope:
    team_id = query.get("team_id")
    team_admin = False
    if team_id is not None and p.user_id is not None and not p.sees_all:
        member = await gw.store.get_member(team_id, p.user_id)
        team_admin = member is not None and member.role == "admin"
    return decide_scope(
        p, key_hash=_key_hash(query.get("api_key")), user_id=query.get(user_param), team_id=team_id,
        team_admin=team_admin,
    )  # fmt: skip


async def logs(gw: Gateway, req: Request) -> None:
    """``GET /spend/logs``: the caller's rows, newest first, filtered by ``api_key`` (the key or its hash),
    ``user_id``, ``team_id``, ``request_id``, ``model`` (the model group), ``start_date`` / ``end_date``."""
    p = _principal(req)
    query = _query(req)
    fmt = _format(query)
    page, size = parse_page(query)
    start = parse_date(query["start_date"], param="start_date") if "start_date" in query else None
    end = parse_date(query["end_date"], param="end_date", end=True) if "end_date" in query else None
    try:
        scope = await _scope(gw, p, query, "user_id")
        rows = await gw.store.list_spend_logs(
            start=start, end=end, key_hash=scope.key_hash, user_id=scope.user_id, team_id=scope.team_id,
            model_group=query.get("model"), request_id=query.get("request_id"), limit=size, offset=(page - 1) * size,
        )  # fmt: skip
    except ValueError as exc:  # the store's own words about a filter it refuses (a NUL character, ...)
        raise BadRequest(str(exc)) from None
    shown = [to_litellm(row, content=scope.content) for row in rows]
    if fmt == "csv":
        columns = LOG_COLUMNS + (_CONTENT_COLUMNS if scope.content else ())
        disposition = (b"content-disposition", b'attachment; filename="spend-logs.csv"')
        await req.respond(200, to_csv(columns, shown), content_type=_CSV, headers=[disposition])
    else:
        await req.respond(200, orjson.dumps(shown))


async def report(gw: Gateway, req: Request) -> None:
    """``GET /global/spend/report``: totals per ``group_by`` (team, customer, api_key, model, provider, day or
    user; LiteLLM's default: team) from ``start_date`` to ``end_date`` (both required), optionally for one
    ``api_key``, ``internal_user_id`` (or ``user_id``) or ``team_id``."""
    p = _principal(req)
    query = _query(req)
    fmt = _format(query)
    if "start_date" not in query or "end_date" not in query:
        raise BadRequest("Please provide start_date and end_date.")
    start = parse_date(query["start_date"], param="start_date")
    end = parse_date(query["end_date"], param="end_date", end=True)
    group_by = query.get("group_by", "team")
    if group_by not in REPORT_GROUPS:
        raise BadRequest(f"'group_by' must be one of {', '.join(REPORT_GROUPS)}.", param="group_by")
    if "internal_user_id" in query:
        query.setdefault("user_id", query["internal_user_id"])
    try:
        scope = await _scope(gw, p, query, "user_id")
        groups = await gw.store.spend_report(
            start=start, end=end, group_by=REPORT_GROUPS[group_by][0], key_hash=scope.key_hash,
            team_id=scope.team_id, user_id=scope.user_id,
        )  # fmt: skip
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    shown = [report_row(group_by, group) for group in groups]
    if fmt == "csv":
        columns = (REPORT_GROUPS[group_by][1], *_REPORT_TOTALS)
        disposition = (b"content-disposition", b'attachment; filename="spend-report.csv"')
        await req.respond(200, to_csv(columns, shown), content_type=_CSV, headers=[disposition])
    else:
        await req.respond(200, orjson.dumps(shown))
