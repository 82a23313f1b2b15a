"""A few of TF Serving's Prometheus metrics, for ``--monitoring_config_file``.

Only the request counter is kept (``:tensorflow:serving:request_count`` by model,
entry point and status), enough to wire up scraping before the real server runs.
"""

from __future__ import annotations

import threading
from collections import Counter

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, str]] = Counter()

    def count_request(self, model_name: str, entrypoint: str, status: str) -> None:
        with self._lock:
            self._requests[(model_name, entrypoint, status)] += 1

    def render(self) -> str:
        """The Prometheus text exposition format."""
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (model, entrypoint, status), count in sorted(self._requests.items()):
                lines.append(f':tensorflow:serving:request_count{{entrypoint="{entrypoint}",'
                             f'model_name="{model}",status="{status}"}} {count}')
        return "\n".join(lines) + "\n"


def prometheus_path(config_text: str) -> str | None:
    """The metrics path a MonitoringConfig text enables, or None."""
    config = _monitoring_config_class()()
    text_format.Parse(config_text, config)
    if not config.prometheus_config.enable:
        return None
    return config.prometheus_config.path or "/monitoring/prometheus/metrics"


def _monitoring_config_class():
    """tensorflow_serving/config/monitoring_config.proto, which tensorflow-serving-api does
    not ship: MonitoringConfig { PrometheusConfig prometheus_config = 1; } and
    PrometheusConfig { bool enable = 1; string path = 2; }, built at run time."""
    pool = descriptor_pool.DescriptorPool()
    file = descriptor_pb2.FileDescriptorProto(name="monitoring_config.proto",
                                              package="tfimage.monitoring", syntax="proto3")
    prometheus = file.message_type.add(name="PrometheusConfig")
    prometheus.field.add(name="enable", number=1,
                         type=descriptor_pb2.FieldDescriptorProto.TYPE_BOOL,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    prometheus.field.add(name="path", number=2,
                         type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                         label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    config = file.message_type.add(name="MonitoringConfig")
    config.field.add(name="prometheus_config", number=1,
                     type=descriptor_pb2.FieldDescriptorProto.TYPE_MESSAGE,
                     type_name=".tfimage.monitoring.PrometheusConfig",
                     label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tfimage.monitoring.MonitoringConfig"))
