"""Cloud Functions / Cloud Run source root: the platform imports ``predict`` from here.

    functions-framework --target predict
    gcloud functions deploy predict --gen2 --runtime python312 --trigger-http --source .

The function itself is `functions.main.predict`.
"""

from functions.main import predict

__all__ = ["predict"]
