"""The HTTP server the project owns: gunicorn, configured for a function on the open internet.

    python -m functions.serving --host 127.0.0.1 --port 8080     # what `make serve` runs

functions-framework's own server (``functions-framework --target predict``) runs gunicorn
with the request-line limit turned off and no way to change it, and its threads wait on
slow clients. This package serves the same function (functions-framework's app for
``predict``, built by `functions.serving.wsgi`) with:

    gunicorn_conf.py   the settings: request line and header limits restored, the worker
                       below, the memory ceiling hook; HOST, PORT, WORKERS, THREADS as before
    worker.py          gthread with every request read whole in the event loop first, under
                       REQUEST_READ_TIMEOUT: slow clients hold no thread; framing errors,
                       short bodies and oversized heads answered as the function's JSON
    request_scan.py    where a request ends (head, Content-Length, chunked), incrementally
    wsgi.py            the app, behind a body check for servers without that worker
    memory.py          a worker grown past WORKER_MAX_RSS_MB is replaced after its request

Platforms that run functions-framework themselves (Cloud Functions) put Google's front end
in front, which buffers requests; see the README's Security section for which do.
"""
