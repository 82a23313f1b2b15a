"""What the adapter saves and what it costs, measured the same way every time.

    .venv/bin/python -m bench [--quick] [--only 1,3] [--check]

prints one markdown table and writes it, with every per-round figure, as JSON
to ``bench/results/`` (see `bench.run`). Every figure is compared with a
baseline measured in the same run, and every timed figure is a median over
rounds.

    run.py          the command: groups in order, table, JSON
    registry.py     the row groups, in the order they run; add a line to add rows
    context.py      what groups share: plan, models, servers started once
    report.py       Row, Goal, markdown
    stats.py        percentiles, paired ratios
    request_bytes.py, latency.py, cold_start.py, throughput.py, memory.py: items 1-4, 6, 7
    external.py     rows from other bench scripts run as child processes
    models.py       MobileNetV2 224 (random weights) and the demo digits, cached in build/
    bare.py         the model alone: the baseline of every timed row (its own process)
    breakdown.py    where a request's time goes, layer by layer, in one process
    server.py, client.py, direct.py   processes and loopback HTTP
    peer.py, peer_service.py          BentoML in its own virtualenv (build/bench/peer-venv)

Other scripts here (``load_soak``, ``thin_cold_start``, ``litert_cold_start``,
``masks``) run on their own too.
"""
