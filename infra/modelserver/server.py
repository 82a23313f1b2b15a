"""The local model server put together: repository -> core -> REST and gRPC front ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infra.modelserver.core import ServerCore
from infra.modelserver.grpc_api import GrpcServer
from infra.modelserver.metrics import Metrics, prometheus_path
from infra.modelserver.models import ModelManager
from infra.modelserver.repository import ModelEntry, RepositoryError, read_model_config
from infra.modelserver.rest import RestApi, RestServer


@dataclass(frozen=True)
class ServerOptions:
    """tensorflow_model_server's flags that this server honours (same names)."""

    port: int | None = 8500
    """gRPC port; None to serve no gRPC; 0 for any free port."""
    rest_api_port: int | None = None
    """REST port; None (TF Serving's 0) to serve no REST; 0 here means any free port."""
    host: str = "127.0.0.1"
    """Address both listen on (TF Serving listens on every interface)."""
    model_config_file: Path | None = None
    model_name: str | None = None
    model_base_path: Path | None = None
    rest_api_timeout_in_ms: int = 30_000
    grpc_max_threads: int = 16
    enable_model_warmup: bool = True
    enable_serialization_as_tensor_content: bool = False
    monitoring_config_file: Path | None = None
    allow_version_labels_for_unavailable_models: bool = False
    """TF Serving's flag of that name: without it, ``version_labels`` in the config the
    server starts with are refused, since labels are assigned before any version loads."""
    models: tuple[ModelEntry, ...] = field(default_factory=tuple)
    """Models given directly (tests); added to those from the flags."""

    def model_entries(self) -> list[ModelEntry]:
        entries = list(self.models)
        if self.model_config_file is not None:
            entries += read_model_config(self.model_config_file)
        if self.model_base_path is not None:
            entries.append(ModelEntry(name=self.model_name or "default",
                                      base_path=Path(self.model_base_path).resolve()))
        if not entries:
            raise RepositoryError("nothing to serve: give --model_config_file or "
                                  "--model_base_path")
        return entries


class ModelServer:
    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.metrics = Metrics()
        manager = ModelManager(options.model_entries(), allow_labels_for_unavailable=(
            options.allow_version_labels_for_unavailable_models))
        self.core = ServerCore(manager,
                               tensor_content=options.enable_serialization_as_tensor_content,
                               warmup=options.enable_model_warmup)
        self.grpc: GrpcServer | None = None
        self.rest: RestServer | None = None

    def start(self) -> ModelServer:
        """Load every model, then listen; a model that fails to load fails the start."""
        self.core.load()
        options = self.options
        metrics_path = None
        if options.monitoring_config_file is not None:
            metrics_path = prometheus_path(Path(options.monitoring_config_file).read_text())
        if options.port is not None:
            self.grpc = GrpcServer(self.core, options.host, options.port,
                                   max_threads=options.grpc_max_threads,
                                   metrics=self.metrics).start()
        if options.rest_api_port is not None:
            api = RestApi(self.core, timeout_ms=options.rest_api_timeout_in_ms,
                          metrics=self.metrics, metrics_path=metrics_path)
            self.rest = RestServer(api, options.host, options.rest_api_port).start()
        return self

    def stop(self) -> None:
        if self.rest is not None:
            self.rest.stop()
        if self.grpc is not None:
            self.grpc.stop()
        for versions in self.core.manager.servables.values():
            for servable in versions.values():
                servable.close()

    @property
    def grpc_target(self) -> str:
        assert self.grpc is not None
        return f"{self.options.host}:{self.grpc.port}"

    @property
    def rest_url(self) -> str:
        assert self.rest is not None
        return f"http://{self.options.host}:{self.rest.port}"
