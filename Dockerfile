# One image for every role (web, workers, beat, migrations); docker-compose.yml picks the command.
# Build for NVIDIA GPUs with: docker compose build --build-arg TENSORFLOW_VARIANT=gpu
FROM python:3.11-slim

ARG TENSORFLOW_VARIANT=cpu
ARG TENSORFLOW_VERSION=2.20.0

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    KERAS_BACKEND=tensorflow \
    TF_CPP_MIN_LOG_LEVEL=2 \
    KERAS_HOME=/data/keras \
    DATA_DIR=/data \
    APP_ENV=production

# libgomp1: OpenMP runtime for scikit-learn; libglib2.0-0: needed by OpenCV's wheels.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /home/app --create-home app

WORKDIR /app
COPY requirements.txt ./
RUN pip install -r requirements.txt \
    && if [ "$TENSORFLOW_VARIANT" = gpu ]; then \
         pip uninstall -y tensorflow-cpu && pip install "tensorflow[and-cuda]==${TENSORFLOW_VERSION}"; \
       fi

COPY --chown=app:app . .
# The project itself, so every command imports it from any directory (dependencies above).
RUN pip install --no-deps -e .
# /data is the volume for blobs, bundles, reports and the Keras cache; owned by the app user
# so a fresh named volume inherits that ownership.
RUN mkdir -p /data && chown app:app /data
USER app
VOLUME ["/data"]
EXPOSE 8000

CMD ["gunicorn", "--bind", "0.0.0.0:8000", "--workers", "2", "--threads", "48", "-c", "python:web.gunicorn_config", "--timeout", "600", \
     "--access-logfile", "-", "web:create_app()"]
