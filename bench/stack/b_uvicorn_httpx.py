"""Candidate b: uvicorn (httptools, uvloop, 1 worker, no access log) + raw ASGI + httpx.AsyncClient."""

import uvicorn
from asgi_httpx import app
from common import port_from_argv

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port_from_argv(),
        http="httptools",
        loop="uvloop",
        workers=1,
        access_log=False,
        log_level="warning",
        lifespan="on",
    )
