"""Prometheus instant queries over an injected ``httpx.Client``.

Values arrive as strings (``"0.004"``, ``"NaN"``, ``"+Inf"``); an empty vector
is returned as an empty list, never as 0. What a value *means* is sli.py's job.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from veza_canary.errors import PrometheusError
from veza_canary.log import redact_text

if TYPE_CHECKING:
    from veza_canary.settings import Settings


@dataclass(frozen=True, slots=True)
class Series:
    labels: dict[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class RangeSeries:
    labels: dict[str, str]
    values: tuple[tuple[float, float], ...]  # (unix time, value)


class Prometheus:
    def __init__(self, client: httpx.Client, base_url: str) -> None:
        self.client = client
        self.base_url = base_url.rstrip("/")

    def query(self, expr: str) -> list[Series]:
        """Run an instant query; return its vector (possibly empty). Raise PrometheusError otherwise."""
        data = self._get("query", {"query": expr}, ("vector", "scalar"))
        result = data.get("result")
        if data["resultType"] == "scalar":
            return [Series({}, _float(result[1]))]
        out = []
        for item in result or []:
            try:
                out.append(Series(dict(item.get("metric", {})), _float(item["value"][1])))
            except (KeyError, IndexError, TypeError):
                raise PrometheusError("Prometheus answered a malformed vector") from None
        return out

    def query_range(self, expr: str, *, start: float, end: float, step: float) -> list[RangeSeries]:
        """Run a range query (unix times, step in seconds); return its matrix (possibly empty)."""
        data = self._get("query_range", {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}",
                                         "step": f"{step:g}"}, ("matrix",))
        out = []
        for item in data.get("result") or []:
            try:
                points = tuple((float(t), _float(v)) for t, v in item["values"])
                out.append(RangeSeries(dict(item.get("metric", {})), points))
            except (KeyError, IndexError, TypeError, ValueError):
                raise PrometheusError("Prometheus answered a malformed matrix") from None
        return out

    def _get(self, api: str, params: dict[str, str], types: tuple[str, ...]) -> dict:
        url = f"{self.base_url}/api/v1/{api}"
        try:
            resp = self.client.get(url, params=params)
        except httpx.HTTPError as exc:
            raise PrometheusError(f"Prometheus {redact_text(self.base_url)} unreachable: {_why(exc)}") from exc
        try:
            body = resp.json()
        except ValueError:
            raise PrometheusError(
                f"Prometheus answered HTTP {resp.status_code} with a non-JSON body"
            ) from None
        if resp.status_code != 200 or not isinstance(body, dict) or body.get("status") != "success":
            err = body.get("error") if isinstance(body, dict) else None
            raise PrometheusError(f"Prometheus answered HTTP {resp.status_code}: {err or 'not a success'}")
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") not in types:
            raise PrometheusError("Prometheus answered an unexpected result type")
        return data

    def ready(self) -> bool:
        try:
            return self.client.get(f"{self.base_url}/-/ready").status_code == 200
        except httpx.HTTPError:
            return False


def _float(s: object) -> float:
    try:
        return float(str(s))  # handles "NaN", "+Inf", "-Inf"
    except ValueError:
        raise PrometheusError(f"Prometheus answered a non-numeric value {str(s)[:40]!r}") from None


def _why(exc: Exception) -> str:
    return redact_text(str(exc) or type(exc).__name__)


def make_http_client(settings: Settings) -> httpx.Client:
    """An httpx client for Prometheus: TLS verified by default; CA bundle, client cert, token from a file."""
    verify: object = True
    if settings.prometheus.ca_bundle:
        import ssl

        verify = ssl.create_default_context(cafile=str(settings.prometheus.ca_bundle))
    cert = None
    if settings.prometheus.client_cert:
        cert = (str(settings.prometheus.client_cert), str(settings.prometheus.client_key)) if settings.prometheus.client_key \
            else str(settings.prometheus.client_cert)
    headers = {}
    if settings.prometheus.token_file:
        try:
            token = settings.prometheus.token_file.read_text().strip()
        except OSError as exc:
            from veza_canary.errors import ConfigError

            raise ConfigError("PROM_TOKEN_FILE", f"cannot read: {exc.strerror}") from None
        headers["Authorization"] = f"Bearer {token}"
    if cert is not None and isinstance(verify, bool):
        import ssl

        verify = ssl.create_default_context()
    if cert is not None:
        assert not isinstance(verify, bool)
        if isinstance(cert, tuple):
            verify.load_cert_chain(cert[0], cert[1])  # type: ignore[attr-defined]
        else:
            verify.load_cert_chain(cert)  # type: ignore[attr-defined]
    return httpx.Client(timeout=settings.timeouts.http, verify=verify, headers=headers,  # type: ignore[arg-type]
                        follow_redirects=False)


def is_number(v: float | None) -> bool:
    return v is not None and math.isfinite(v)
