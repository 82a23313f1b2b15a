# The in-process TensorFlow function for AWS Lambda (template.yaml: PredictFunction).
#
#   sam build PredictFunction        # builds this image (needs a Docker engine)
#   sam local invoke PredictFunction -e events/httpapi-jpeg.json
#
# Python 3.12 on purpose: its base image is Amazon Linux 2023 (glibc 2.34). tensorflow-cpu
# 2.21 ships manylinux_2_27 wheels only, which do not install on the python3.11 image
# (Amazon Linux 2, glibc 2.26).
FROM public.ecr.aws/lambda/python:3.12

# Dependencies first, so this layer is rebuilt only when the pins change.
COPY deploy/lambda-image/requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Then the project itself, installed as a package (extras inprocess and aws, pinned by the
# lock): the handler imports from site-packages, whatever the working directory, and no
# source is left in the image.
COPY requirements.lock pyproject.toml README.md modelmeta.py /tmp/src/
COPY functions/ /tmp/src/functions/
RUN pip install --no-cache-dir -c /tmp/src/requirements.lock "/tmp/src[inprocess,aws]" \
    && rm -rf /tmp/src

# The model comes from MODEL_URI (s3://bucket/prefix/, set by template.yaml) into /tmp at
# cold start. To bake one in instead, copy it and point MODEL_URI at it:
#   COPY build/models/digits/served/ /opt/model/
#   ENV MODEL_URI=/opt/model
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    MODEL_CACHE_DIR=/tmp/models \
    BACKEND=inprocess

CMD ["functions.platforms.aws.lambda_handler"]
