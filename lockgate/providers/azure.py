"""Azure OpenAI: the deployment name is in the path, ``api-version`` in the query, the key in ``api-key``.

``model: azure/<deployment>`` with ``api_base: https://<resource>.openai.azure.com``. With
``api_version: v1`` (or an ``api_base`` ending in ``/openai/v1``) the newer v1 API is used, where the
plain OpenAI paths apply and the body's ``model`` names the deployment.
"""

from __future__ import annotations

from urllib.parse import quote

import orjson

from lockgate.deployment import Deployment
from lockgate.providers.base import Call, Provider
from lockgate.secret import Secret
from lockgate.upstream import UpstreamRequest, UpstreamResponse

__all__ = ["Azure"]

DEFAULT_API_VERSION = "2024-10-21"


class Azure(Provider):
    name = "azure"
    requires_api_base = True
    config_params = frozenset({"azure_ad_token"})

    def check(self, deployment: Deployment) -> list[tuple[str, str]]:
        problems = super().check(deployment)
        if not deployment.api_key and "azure_ad_token" not in deployment.options:
            problems.append(("api_key", "the azure provider needs api_key (or azure_ad_token)"))
        return problems

    def _v1(self, deployment: Deployment) -> bool:
        base = (deployment.api_base or "").rstrip("/")
        return deployment.api_version in ("v1", "latest", "preview") or base.endswith("/openai/v1")

    def _url(self, deployment: Deployment, operation: str) -> str:
        base = (deployment.api_base or "").rstrip("/")
        if self._v1(deployment):
            if not base.endswith("/openai/v1"):
                base += "/openai/v1"
            return f"{base}/{operation}"
        version = quote(deployment.api_version or DEFAULT_API_VERSION, safe="-")
        name = quote(deployment.upstream_model, safe="")
        return f"{base}/openai/deployments/{name}/{operation}?api-version={version}"

    def _headers(self, deployment: Deployment) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if deployment.api_key:
            headers["api-key"] = deployment.api_key.reveal()
        else:
            token = deployment.options.get("azure_ad_token")
            headers["Authorization"] = "Bearer " + (token.reveal() if isinstance(token, Secret) else "")
        return headers

    def _request(self, call: Call, operation: str) -> UpstreamRequest:
        body = call.raw if call.raw is not None else orjson.dumps(call.body)
        return UpstreamRequest(self._url(call.deployment, operation), self._headers(call.deployment), body)

    async def chat(self, call: Call) -> UpstreamResponse:
        request = self._request(call, "chat/completions")
        return await call.http.send(request, stream=call.stream, timeouts=call.timeouts)

    async def embeddings(self, call: Call) -> UpstreamResponse:
        return await call.http.send(self._request(call, "embeddings"), stream=False, timeouts=call.timeouts)
