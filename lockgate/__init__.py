"""lockgate: an LLM gateway, one controlled door to the model providers.

The request's path through the package (see docs/architecture.md):

    server.py   uvicorn process(es), bind checks, graceful drain
    app.py      the ASGI app: route table, body limits, error translation
    auth.py     who is calling (master key for now; virtual keys later)
    api/        thin handlers per surface (OpenAI dialect, health)
    routing/    model groups, deployments, choosing one, retries
    providers/  one small adapter per upstream, behind one interface
    streaming.py  SSE pass-through that captures usage
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
