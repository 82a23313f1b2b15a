"""What every row group of one bench run shares: the plan, the models, the servers.

Servers and bare-model workers are started on first use and kept for the run,
so the latency, throughput and peer rows measure the same warm processes; the
context stops them all at the end, whatever happened.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import payloads, peer
from bench.client import BenchError, Request
from bench.direct import BareWorker, bare_argv
from bench.models import BENCH_BUILD, BenchModel
from bench.server import ROOT, ServerProcess, quiet_env, start_function

MODEL_LABELS = {"mobilenet_v2": "MobileNetV2 224", "digits": "digits"}


@dataclass(frozen=True)
class Plan:
    """How much to measure. ``quick`` trades precision for time; the method is the same."""

    quick: bool = False
    rounds: int = 3
    """Repeated rounds behind every median."""
    latency_requests: dict[str, int] = field(default_factory=lambda: {
        "mobilenet_v2": 120, "digits": 300})
    throughput_requests: dict[str, int] = field(default_factory=lambda: {
        "mobilenet_v2": 16, "digits": 80})
    """Requests per burst (at least the highest concurrency)."""
    throughput_bursts: int = 3
    """Bursts per side, level and round."""
    concurrency: tuple[int, ...] = (1, 4, 8)
    warmup: int = 10
    cold_starts: int = 5

    @classmethod
    def for_run(cls, quick: bool) -> Plan:
        if not quick:
            return cls()
        return cls(quick=True, rounds=2,
                   latency_requests={"mobilenet_v2": 40, "digits": 100},
                   throughput_requests={"mobilenet_v2": 16, "digits": 80},
                   throughput_bursts=2, warmup=5, cold_starts=2)


@dataclass
class Context:
    plan: Plan
    models: dict[str, BenchModel]
    work_dir: Path
    """Logs and sample files of this run (under build/bench/runs/)."""
    log: Callable[[str], None]
    memory: dict[str, int] = field(default_factory=dict)
    """Peak resident bytes of each mode, filled by the groups that ran it (item 6)."""
    memory_baseline: dict[str, str] = field(default_factory=dict)
    """For a mode in ``memory``, the mode it is compared with (the model alone)."""
    _servers: dict[str, ServerProcess] = field(default_factory=dict)
    _workers: dict[str, BareWorker] = field(default_factory=dict)
    _peer: ServerProcess | None = None
    _peer_error: str | None = None
    peer_install_seconds: float | None = None

    # -- inputs ----------------------------------------------------------------------------

    def image_file(self, model: str) -> Path:
        """The photo (or digit) each request for ``model`` carries, as a file on disk."""
        path = self.work_dir / f"{model}-input.{'png' if model == 'digits' else 'jpg'}"
        if not path.exists():
            path.write_bytes(sample_image(self.models[model]))
        return path

    def function_request(self, model: str) -> Request:
        """The JSON base64 request a mini-program's ``wx.request`` sends."""
        payload = payloads.base64_json(self.image_file(model).read_bytes())
        return Request("/", payload.body, payload.headers, check=_function_check)

    def peer_request(self, model: str) -> Request:
        payload = payloads.base64_json(self.image_file(model).read_bytes())
        return Request("/predict", payload.body, payload.headers, check=_peer_check)

    # -- processes -------------------------------------------------------------------------

    def function_server(self, model: str) -> ServerProcess:
        """Our function serving ``model`` in-process, started and warmed on first use."""
        if model not in self._servers:
            self.log(f"starting the function with {MODEL_LABELS[model]}")
            server = start_function(self.models[model].served, self.work_dir / "logs",
                                    name=f"function-{model}")
            self._servers[model] = server
            server.wait_ready(self.function_request(model))
        return self._servers[model]

    def bare_worker(self, model: str) -> BareWorker:
        if model not in self._workers:
            self.log(f"starting the bare model process for {MODEL_LABELS[model]}")
            self._workers[model] = BareWorker(
                bare_argv(self.models[model], self.image_file(model), serve=True),
                self.work_dir / "logs" / f"bare-{model}.log")
        return self._workers[model]

    def peer_for(self, model: str) -> tuple[ServerProcess | None, str]:
        """The peer serving ``model`` and no reason, or no peer and why (only MobileNetV2
        has one)."""
        if model != "mobilenet_v2":
            return None, ""
        try:
            return self.peer_server(), ""
        except peer.PeerUnavailable as exc:
            return None, str(exc)

    def peer_server(self) -> ServerProcess:
        """BentoML serving MobileNetV2; raises `peer.PeerUnavailable` with the reason."""
        if self._peer_error is not None:
            raise peer.PeerUnavailable(self._peer_error)
        if self._peer is None:
            try:
                bentoml, seconds = peer.ensure_venv(self.work_dir / "logs" / "peer-install.log",
                                                    self.log)
                self.peer_install_seconds = seconds
                self.log("starting the peer (BentoML) with MobileNetV2 224")
                server = peer.start_peer(bentoml, self.models["mobilenet_v2"],
                                         self.work_dir / "logs")
                self._peer = server
                server.wait_ready(self.peer_request("mobilenet_v2"))
            except (peer.PeerUnavailable, BenchError) as exc:
                self._peer_error = str(exc)
                raise peer.PeerUnavailable(self._peer_error) from exc
        return self._peer

    def keep_memory(self, label: str, rss: int | None, baseline: str | None = None) -> None:
        if rss:
            self.memory[label] = rss
            if baseline:
                self.memory_baseline[label] = baseline

    def record_memory(self) -> None:
        """Peak memory of every process this run kept, read while they still live."""
        for model, worker in self._workers.items():
            self.keep_memory(f"bare model ({MODEL_LABELS[model]}), warm", worker.peak_rss())
        for model, server in self._servers.items():
            self.keep_memory(f"function in-process ({MODEL_LABELS[model]}), warm",
                             server.peak_rss(), f"bare model ({MODEL_LABELS[model]}), warm")
        if self._peer is not None:
            self.keep_memory(f"peer BentoML ({MODEL_LABELS['mobilenet_v2']}), warm",
                             self._peer.peak_rss(),
                             f"bare model ({MODEL_LABELS['mobilenet_v2']}), warm")

    def close(self) -> None:
        for server in [*self._servers.values(), *([self._peer] if self._peer else [])]:
            server.stop()
        for worker in self._workers.values():
            worker.close()
        self._servers.clear()
        self._workers.clear()
        self._peer = None


def sample_image(model: BenchModel) -> bytes:
    """The request image: the photo at the model's size, or a held-out digit as PNG."""
    if model.name == "digits":
        from modelprep.digits import digit_images

        return payloads.encode_png(digit_images().x_test[0])
    return payloads.encode_jpeg(payloads.photo_pixels((model.height, model.width)))


def _function_check(body: bytes) -> None:
    doc = json.loads(body)
    if not (isinstance(doc, dict) and len(doc.get("predictions", ())) == 1
            and "class_id" in doc["predictions"][0]):
        raise BenchError(f"the function answered 200 without a prediction: {body[:200]!r}")


def _peer_check(body: bytes) -> None:
    doc = json.loads(body)
    if not (isinstance(doc, dict) and "class_id" in doc):
        raise BenchError(f"the peer answered 200 without a prediction: {body[:200]!r}")


def build_models(log: Callable[[str], None]) -> dict[str, BenchModel]:
    """Both models, built in a child process (TensorFlow stays out of the runner)."""
    log("preparing the models (cached under build/; the first run builds them)")
    done = subprocess.run([sys.executable, "-m", "bench.models"], cwd=ROOT,
                          env=quiet_env({"TF_CPP_MIN_LOG_LEVEL": "3"}), capture_output=True,
                          timeout=1800, check=False)
    if done.returncode != 0:
        raise BenchError("building the bench models failed:\n"
                         + done.stderr.decode(errors="replace")[-1500:])
    data = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return {name: BenchModel.from_dict(d) for name, d in data.items()}


def run_dir() -> Path:
    return BENCH_BUILD / "runs"
