"""A local stand-in for TF Serving, for machines without containers.

    python -m infra.modelserver --model_config_file=models.config \\
        --port=8500 --rest_api_port=8501

Serves a TF Serving model repository (``BASE/NAME/VERSION/``, ``models.config`` with
version policies and labels) over TF Serving's REST API (predict, metadata, status)
and gRPC PredictionService (Predict, GetModelMetadata) and ModelService
(GetModelStatus), with TF Serving's JSON rules and error mapping. It runs TensorFlow
in-process and is meant for development and tests; production runs the real
tensorflow/serving image (see infra/tfserving/).
"""
