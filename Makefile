# imagerec: `make run` serves the app, `make test` runs the suite, `make dev` is the
# development server. See README.md and docs/.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
MODEL_VARIANT ?= lite0
MODEL_DIR ?= models
STAMP := $(VENV)/.deps-stamp
DEV_STAMP := $(VENV)/.dev-deps-stamp
# Locks (requirements/*.txt, every line hashed) compiled from requirements/*.in by `make lock`.
REQ := requirements
PIP_INSTALL = $(PY) -m pip install --disable-pip-version-check -q --require-hashes
# The directory `make lock` reads the PyTorch CPU wheel of requirements/verify.in from.
TORCH_FIND_LINKS ?= /opt/wheels

.PHONY: help deps dev-deps a11y-deps verify-deps lock model model-lite2 migrate run dev worker storage bench-storage test test-fast lint format docs clients contract api-compat bench bench-e2e bench-frontdoor bench-direct bench-servers bench-hosts chaos multihost loadtest verify-model convert clean

help:
	@echo "make run    - install, build the model if absent, migrate, serve on http://127.0.0.1:$(PORT) with a worker"
	@echo "make dev    - the same with Django's development server: autoreload, DEBUG on"
	@echo "make test   - install test dependencies and run the whole test suite"
	@echo "make model  - build the default model (efficientnet_lite0) into $(MODEL_DIR)/"
	@echo "make docs   - regenerate the OpenAPI schema and build the documentation site into var/site"
	@echo "make contract - schemathesis and the generated Python and TypeScript clients against a live stack"
	@echo "make api-compat - fail on a breaking API change the changelog does not announce"
	@echo "make storage - SeaweedFS (S3) on 127.0.0.1:8333 with data in var/storage, for MEDIA_STORAGE=s3"
	@echo "make bench  - measure inference latency per engine and batch size (writes bench/results.json)"
	@echo "make bench-frontdoor - the web process's CPU per request by stage (writes bench/frontdoor.json)"
	@echo "make bench-direct - web CPU per image, direct upload (presigned PUT) against multipart (bench/direct.json)"
	@echo "make lock   - recompile the hashed locks requirements/*.txt from requirements/*.in"

# `make run` builds the model on first use, so it installs the training lock (the worker's
# runtime plus scikit-learn & co.); the web-only and worker-only locks are for the images.
$(STAMP): $(REQ)/training.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r $(REQ)/training.txt
	@touch $@

$(DEV_STAMP): $(STAMP) $(REQ)/dev.txt
	$(PIP_INSTALL) -r $(REQ)/dev.txt
	@touch $@

deps: $(STAMP)
dev-deps: $(DEV_STAMP)

# axe-core for the accessibility audit (tests/test_accessibility.py), from its npm lock.
A11Y := tests/accessibility
a11y-deps: $(A11Y)/node_modules/.package-lock.json
$(A11Y)/node_modules/.package-lock.json: $(A11Y)/package-lock.json
	@command -v npm >/dev/null 2>&1 || bash bin/ensure-system-deps
	cd $(A11Y) && npm ci --no-audit --no-fund --loglevel=error

# dev.txt is resolved first (keeping its pins unless LOCK_FLAGS=--upgrade); every other lock
# is constrained to it, so each is a subset of the dev lock at the same versions. PyPI is
# the index (no config files, no UV_* index variables); verify.txt adds the CPU-only torch
# wheel from TORCH_FIND_LINKS.
UV_COMPILE = env -u UV_INDEX_URL -u UV_EXTRA_INDEX_URL -u UV_DEFAULT_INDEX -u UV_INDEX -u UV_FIND_LINKS \
	$(VENV)/bin/uv pip compile --quiet --no-config --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" $(LOCK_FLAGS)
lock: dev-deps
	$(UV_COMPILE) -o $(REQ)/dev.txt $(REQ)/dev.in
	@for role in web worker training convert; do \
	  echo "$(REQ)/$$role.txt"; \
	  $(UV_COMPILE) -c $(REQ)/dev.txt -o $(REQ)/$$role.txt $(REQ)/$$role.in || exit 1; \
	done
	$(UV_COMPILE) -c $(REQ)/dev.txt --find-links $(TORCH_FIND_LINKS) -o $(REQ)/verify.txt $(REQ)/verify.in

model: deps
	$(PY) -m training.build_imagenet --variant $(MODEL_VARIANT) --out $(MODEL_DIR)

model-lite2: deps
	$(PY) -m training.build_imagenet --variant lite2 --out $(MODEL_DIR)

# The optional PyTorch reference (CPU-only wheel, requirements/verify.in), on top of deps.
verify-deps: deps
	$(PIP_INSTALL) -r $(REQ)/verify.txt

# Installs the optional PyTorch reference and rebuilds the model card with equivalence figures.
verify-model: verify-deps
	$(PY) -m training.build_imagenet --variant $(MODEL_VARIANT) --out $(MODEL_DIR) --force

# TFLite fp16 / int8 and ONNX files next to the model (training/convert.py); the onnx engine
# (MODEL_ENGINE=onnx) serves model.onnx, so run this before selecting it.
convert: deps model
	$(PIP_INSTALL) -r $(REQ)/convert.txt
	$(PY) -m training.convert --model $(MODEL_DIR)/efficientnet_$(MODEL_VARIANT)/1 --formats tflite-fp16,tflite-int8,onnx

migrate: deps
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_superuser
	$(PY) manage.py sync_models

# Served as production serves it (gunicorn + uvicorn workers, DEBUG off, a generated key in
# var/secret_key), on 127.0.0.1 over plain HTTP, with one worker: bin/run.
run: model migrate
	@bash bin/run $(PORT)

# Django's runserver with autoreload and DEBUG on (debug pages), with one worker: bin/run-dev.
dev: model migrate
	@bash bin/run-dev $(PORT)

# SeaweedFS as the S3 server (bin/storage): 127.0.0.1:8333, data in var/storage, the bucket and
# the identity from AWS_STORAGE_BUCKET_NAME / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (local
# defaults in imagerec/storage.py). Then `MEDIA_STORAGE=s3 make run` in another shell.
storage: dev-deps
	$(PY) bin/storage run

# One more worker, on this host or another (docs/scaling.md): the same install and environment
# (DATABASE_URL, CELERY_BROKER_URL, MEDIA_STORAGE...); it takes work as soon as its model is
# loaded. Its node name is WORKER_NAME with %h the hostname (heartbeats add the pid).
# A worker host that should only classify: make worker WORKER_QUEUES=inference
WORKER_NAME ?= worker@%h
WORKER_QUEUES ?= inference,maintenance,celery
worker: deps
	$(VENV)/bin/celery -A imagerec worker --pool=prefork --concurrency=1 -Q $(WORKER_QUEUES) -n '$(WORKER_NAME)' --loglevel=INFO

test: dev-deps model a11y-deps
	@bash bin/ensure-system-deps
	$(PY) -m pytest
	$(PY) -m pytest -m chaos tests/chaos -s
	$(MAKE) contract

test-fast: dev-deps model a11y-deps
	$(PY) -m pytest -m "not slow"

lint: dev-deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: dev-deps
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# The documentation site (mkdocs.yml, docs/): the OpenAPI schema the API reference is
# rendered from (committed; tests/test_docs.py fails when it drifts from the code), then
# the site with --strict (a broken link or anchor fails) into var/site.
docs: dev-deps
	$(PY) manage.py spectacular --file docs/reference/openapi.yaml --validate --fail-on-warn
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

# The clients a user generates from the committed schema (docs/clients.md), into var/clients:
# Python with openapi-python-client, TypeScript types with openapi-typescript (the npm
# packages of tests/contract/ts, installed from its lock).
CLIENTS := var/clients
clients: dev-deps
	rm -rf $(CLIENTS)/python $(CLIENTS)/ts
	mkdir -p $(CLIENTS)/ts
	$(VENV)/bin/openapi-python-client generate --path docs/reference/openapi.yaml \
	  --config tests/contract/openapi-python-client.yaml --output-path $(CLIENTS)/python/imagerec_client --meta none
	cd tests/contract/ts && npm ci --no-audit --no-fund --loglevel=error && npm run --silent generate

# The API against its schema on a stack of its own (tests/contract): schemathesis with every
# check and phase, then the whole journey with each generated client.
contract: clients model
	$(PY) -m pytest -m contract tests/contract

# Breaking API changes since the baseline schema must be announced in docs/changelog.md.
api-compat: dev-deps
	$(PY) manage.py api_compat

bench: dev-deps model
	$(PY) -m training.bench --model $(MODEL_DIR)/efficientnet_$(MODEL_VARIANT)/1 --out bench/results.json

# 500 submissions while workers are SIGKILLed (and Redis restarted when CELERY_BROKER_URL is redis://).
chaos: dev-deps model
	$(PY) -m pytest -m chaos tests/chaos -s

# A web host and worker hosts in network and mount namespaces (tests/multihost): a host killed
# mid-batch, one added. Needs root, PostgreSQL + Redis (DATABASE_URL, CELERY_BROKER_URL).
multihost: dev-deps model
	$(PY) -m pytest -m multihost tests/multihost -s

# Throughput with one and two worker hosts, each pinned to its own core (bench/hosts.py,
# writes bench/hosts.json). Needs root, PostgreSQL + Redis; BENCH_HOSTS_N images per run.
bench-hosts: dev-deps model
	$(PY) bench/hosts.py --out bench/hosts.json

# 50 clients for 60 s against gunicorn + a worker on PostgreSQL and Redis on this machine.
loadtest: dev-deps model
	@bash bin/loadtest

# Real photos through the HTTP API at concurrency 1/16/64 on the real stack, baseline revision vs
# now, plus the raw runner and model.predict() on the same photos (bench/e2e.json). bin/bench-e2e --quick
# for a short run; BENCH_N, BENCH_LEVELS, BENCH_BASELINE, BENCH_WORKERS, BENCH_SECOND_HOST.
bench-e2e: dev-deps model
	@bash bin/bench-e2e

# The web process's CPU per request by stage (submit, submit-and-wait, poll, batches of 8 and 20),
# in-process under cProfile (bench/frontdoor.py, writes bench/frontdoor.json). PostgreSQL + Redis.
bench-frontdoor: dev-deps
	$(PY) bench/frontdoor.py

# Direct uploads (presign + PUT to SeaweedFS + commit) against a multipart submit: the web
# process's CPU per image, small and phone-size photos (bench/direct.py, writes bench/direct.json).
bench-direct: dev-deps
	$(PY) bench/direct.py

# The web server alone: gunicorn + uvicorn workers against granian (bench/servers.py, writes
# bench/servers.json; granian is in the dev lock, for this measurement only).
bench-servers: dev-deps
	$(PY) bench/servers.py

# Single-image latency with media on S3 (SeaweedFS) against local media in one run (bench/storage.json).
bench-storage: dev-deps model
	$(PY) bench/storage.py

clean:
	rm -rf var/test .pytest_cache
