"""The big screen: a static page (static/index.html, screen.js, screen.css) served by
the HTTP layer at / and /static/<file>.  It reads GET /v1/stats/stream (server-sent
events) and draws every figure from the event it last received; no network other
than its own server, no third-party code."""
