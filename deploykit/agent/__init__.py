"""The on-device agent (`deploykit agent serve`) and its client (`deploykit profile --device D` when D has
`agent: {url, token_env}`).

Protocol (HTTP, JSON unless said otherwise; every endpoint but /health needs `Authorization: Bearer TOKEN`):

    GET  /health                       liveness only: {ok, protocol} (the one endpoint without the token)
    GET  /info                         runtimes available here and their versions, device facts, busy flag,
                                       the upload cap
    HEAD /artifacts/{sha256}           200 stored / 404 not: the host skips uploads the agent already has
    GET  /artifacts/{sha256}           {sha256, kind, size_bytes}
    PUT  /artifacts/{sha256}           the artifact's bytes (an ONNX file, or a tar of a directory artifact);
                                       stored only if they hash to {sha256}; 201 stored, 200 already there
    POST /models                       {sha256, runtime, precision, compute_units, threads} -> {model,
                                       version, static_batch, precision_used, load_ms, ...}: loaded there
    POST /models/{model}/run?repeat=N  body: a float32 NCHW batch as .npy -> the outputs as .npy, with the
                                       device time of the N runs in X-Deploykit-Elapsed-Ms
    POST /measure                      {items: [{model, shape}], runs, warmup, seed} -> {latency: [stats]}:
                                       interleaved on seeded normal inputs, on the device

Errors answer {"detail": {"error": ..., "fix": ...}}: 400 malformed, 401 token, 404 unknown, 408 stalled
body, 413 too large, 422 refused, 503 busy (after the queue timeout, or too many requests at once), 504
over the request timeout. The token is checked, and every body's size, before any body byte is read (see
agent/guard.py); connections that send no complete request head in 10 s are closed (agent/protocol.py).
The server (FastAPI, uvicorn) and the client (httpx) need `pip install "deploykit[agent]"`.
"""

DEFAULT_PORT = 8765
