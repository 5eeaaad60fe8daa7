"""Fill a scratch database with a large prediction history and time the stats queries.

    createdb -h 127.0.0.1 -U root imagerec_bench
    DATABASE_URL=postgres://root@127.0.0.1:5432/imagerec_bench python manage.py migrate
    DATABASE_URL=postgres://root@127.0.0.1:5432/imagerec_bench python manage.py stats_bench --rows 1000000
    dropdb -h 127.0.0.1 -U root imagerec_bench

Refuses to run unless the database name contains "bench": it inserts (and afterwards
deletes, unless --keep) a million rows.
"""

from __future__ import annotations

import random
import time
import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from predictions.models import ModelVersion, Prediction, PredictionStatus
from predictions.operations import metrics, stats

MARKER = "stats-bench"  # original_filename of every generated row, for the cleanup
LABELS = 200


class Command(BaseCommand):
    help = "Generate a large prediction history (bulk inserts) and time the stats page and selectors."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--rows", type=int, default=1_000_000)
        parser.add_argument("--days", type=int, default=90, help="spread the rows over this many days")
        parser.add_argument("--users", type=int, default=50)
        parser.add_argument("--batch", type=int, default=20_000, help="bulk_create batch (non-PostgreSQL)")
        parser.add_argument("--keep", action="store_true", help="keep the generated rows")
        parser.add_argument("--skip-generate", action="store_true", help="time the existing rows only")

    def handle(self, *args: Any, **options: Any) -> None:
        name = str(connection.settings_dict["NAME"])
        if "bench" not in name:
            raise CommandError(f"Refusing to fill database {name!r}: use a scratch one named *bench*.")
        for option, least in (("rows", 0), ("days", 1), ("users", 2), ("batch", 1)):
            if options[option] < least:
                # --users: the first is the staff user, the second the regular one measured.
                raise CommandError(f"--{option} must be at least {least}, not {options[option]}.")
        try:
            self._run(options)
        except DatabaseError as error:
            raise CommandError(f"Database error ({error}); is {name!r} up and migrated?") from error

    def _run(self, options: dict[str, Any]) -> None:
        users = self._users(options["users"])
        if not options["skip_generate"]:
            started = time.perf_counter()
            self._generate(options["rows"], options["days"], users, options["batch"])
            self.stdout.write(
                f"generated {options['rows']:,} rows on {connection.vendor} in {time.perf_counter() - started:.1f}s"
            )
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("ANALYZE predictions_prediction")
        self.stdout.write(f"rows in table: {Prediction.objects.count():,}")
        try:
            self._measure(users)
        finally:
            if not options["keep"] and not options["skip_generate"]:
                deleted = self._cleanup()
                self.stdout.write(f"deleted {deleted:,} generated rows")

    def _users(self, count: int) -> list[Any]:
        user_model = get_user_model()
        existing = list(user_model.objects.filter(username__startswith=f"{MARKER}-").order_by("id"))
        if len(existing) < count:
            user_model.objects.bulk_create(
                [
                    user_model(username=f"{MARKER}-{index}", password="!")  # noqa: S106 - "!" = unusable
                    for index in range(len(existing), count)
                ]
            )
            existing = list(user_model.objects.filter(username__startswith=f"{MARKER}-").order_by("id"))
        staff = existing[0]  # measured as an operator: allowed to read every user's predictions
        if not staff.is_staff:
            staff.is_staff = True
            staff.save(update_fields=["is_staff"])
        staff.user_permissions.add(
            Permission.objects.get(content_type__app_label="predictions", codename="view_prediction")
        )
        return existing

    def _versions(self) -> tuple[ModelVersion, ModelVersion]:
        old, _ = ModelVersion.objects.get_or_create(name=MARKER, version="1", defaults={"path": "/bench/1"})
        new, _ = ModelVersion.objects.get_or_create(name=MARKER, version="2", defaults={"path": "/bench/2"})
        return old, new

    def _generate(self, rows: int, days: int, users: list[Any], batch: int) -> None:
        old, new = self._versions()
        user_ids = [user.id for user in users]
        if connection.vendor == "postgresql":
            self._generate_postgres(rows, days, user_ids, old.id, new.id)
        else:
            self._generate_bulk(rows, days, user_ids, old.id, new.id, batch)

    def _generate_postgres(self, rows: int, days: int, user_ids: list[int], old: int, new: int) -> None:
        # One INSERT ... SELECT over generate_series: the rows never leave the server.
        sql = """
        INSERT INTO predictions_prediction (
            id, user_id, status, image, original_filename, image_format, size_bytes, width,
            height, sha256, top_k, model_version_id, label, class_id, confidence,
            top_predictions, error, attempts, queue_ms, preprocess_ms, inference_ms,
            total_ms, created_at, started_at, completed_at)
        SELECT
            md5(g::text || random()::text)::uuid, ids[1 + g %% cardinality(ids)], status,
            'uploads/bench.jpg', %(marker)s, 'JPEG', 50000, 640, 480, repeat('0', 64), 5,
            CASE WHEN ok THEN CASE WHEN age > %(half)s THEN %(old)s ELSE %(new)s END END,
            CASE WHEN ok THEN 'label_' || floor(%(labels)s * r_label ^ 2)::int ELSE '' END,
            CASE WHEN ok THEN floor(%(labels)s * r_label ^ 2)::int::text ELSE '' END,
            CASE WHEN ok THEN r_conf END, '[]', CASE WHEN status = 'failed' THEN 'bench' ELSE '' END,
            1, q, p, i, CASE WHEN ok THEN q + p + i + 2 END,
            now() - age * interval '1 day',
            CASE WHEN status <> 'pending' THEN now() - age * interval '1 day' END,
            CASE WHEN status IN ('succeeded', 'failed')
                 THEN now() - age * interval '1 day' + interval '1 millisecond' * coalesce(q + p + i + 2, 0)
            END
        FROM (
            SELECT g, ids, age, status, status = 'succeeded' AS ok, r_label, r_conf,
                   CASE WHEN status = 'succeeded' THEN 2 + 400 * r_q ^ 4 END AS q,
                   CASE WHEN status = 'succeeded' THEN 2 + 8 * r_p END AS p,
                   CASE WHEN status = 'succeeded'
                        THEN 20 + 60 * r_i + CASE WHEN r_i > 0.98 THEN 400 ELSE 0 END END AS i
            FROM (
                SELECT g, %(user_ids)s::bigint[] AS ids, random() * %(days)s AS age,
                       random() AS r_label, random() AS r_conf, random() AS r_q, random() AS r_p,
                       random() AS r_i,
                       CASE WHEN s < 0.94 THEN 'succeeded' WHEN s < 0.97 THEN 'failed'
                            WHEN s < 0.985 THEN 'pending' ELSE 'running' END AS status
                FROM (SELECT g, random() AS s FROM generate_series(1, %(rows)s) AS g) AS series
            ) AS drawn
        ) AS shaped
        """
        params: dict[str, str | float | list[int]] = {
            "marker": MARKER,
            "user_ids": user_ids,
            "days": days,
            "half": days / 2,
            "old": old,
            "new": new,
            "labels": LABELS,
            "rows": rows,
        }
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, params)

    def _generate_bulk(self, rows: int, days: int, user_ids: list[int], old: int, new: int, batch: int) -> None:
        rng = random.Random(42)
        now = timezone.now()
        pending: list[Prediction] = []
        for index in range(rows):
            age = timedelta(days=rng.random() * days)
            draw = rng.random()
            status = (
                PredictionStatus.SUCCEEDED
                if draw < 0.94
                else PredictionStatus.FAILED
                if draw < 0.97
                else PredictionStatus.PENDING
                if draw < 0.985
                else PredictionStatus.RUNNING
            )
            ok = status == PredictionStatus.SUCCEEDED
            q = 2 + 400 * rng.random() ** 4 if ok else None
            p = 2 + 8 * rng.random() if ok else None
            r_i = rng.random()
            i = 20 + 60 * r_i + (400 if r_i > 0.98 else 0) if ok else None
            total_ms = q + p + i + 2 if q is not None and p is not None and i is not None else None
            label_index = int(LABELS * rng.random() ** 2)
            created_at = now - age
            pending.append(
                Prediction(
                    id=uuid.uuid4(),
                    user_id=user_ids[index % len(user_ids)],
                    status=status,
                    image="uploads/bench.jpg",
                    original_filename=MARKER,
                    image_format="JPEG",
                    size_bytes=50000,
                    width=640,
                    height=480,
                    sha256="0" * 64,
                    model_version_id=(old if age > timedelta(days=days / 2) else new) if ok else None,
                    label=f"label_{label_index}" if ok else "",
                    class_id=str(label_index) if ok else "",
                    confidence=rng.random() if ok else None,
                    queue_ms=q,
                    preprocess_ms=p,
                    inference_ms=i,
                    total_ms=total_ms,
                    created_at=created_at,
                    started_at=created_at if status != PredictionStatus.PENDING else None,
                    completed_at=created_at if status in (PredictionStatus.SUCCEEDED, "failed") else None,
                )
            )
            if len(pending) >= batch:
                Prediction.objects.bulk_create(pending)
                pending = []
        if pending:
            Prediction.objects.bulk_create(pending)

    def _measure(self, users: list[Any]) -> None:
        staff, regular = users[0], users[1]
        self.stdout.write(f"{'what':<48} {'queries':>7} {'first s':>8} {'second s':>9}")
        for days in stats.WINDOW_DAYS:
            self._time(
                f"prediction_stats(staff, days={days})",
                lambda d=days: stats.prediction_stats(user=staff, days=d),
            )
        self._time("prediction_stats(user, days=90)", lambda: stats.prediction_stats(user=regular, days=90))
        client = Client(HTTP_HOST="localhost")
        client.force_login(staff)
        self._time("GET /stats/?days=90 (staff, full page)", lambda: _ok(client.get("/stats/?days=90")))
        self._time("GET /api/v1/stats/?days=30 (staff)", lambda: _ok(client.get("/api/v1/stats/?days=30")))
        self._time("metrics_text() (/metrics body)", metrics.metrics_text)
        self._time("prediction_stats_refresh() (beat, 3 windows)", stats.prediction_stats_refresh)
        self._time("GET /stats/?days=90 (staff, after refresh)", lambda: _ok(client.get("/stats/?days=90")))

    def _time(self, label: str, call: Any) -> None:
        # The generation above can fill the bounded query log, which would make the
        # captured count 0: start each measurement from an empty log.
        connection.queries_log.clear()
        timings = []
        for _ in range(2):
            with CaptureQueriesContext(connection) as queries:
                started = time.perf_counter()
                call()
                timings.append(time.perf_counter() - started)
        self.stdout.write(f"{label:<48} {len(queries):>7} {timings[0]:>8.2f} {timings[1]:>9.2f}")

    def _cleanup(self) -> int:
        deleted, _ = Prediction.objects.filter(original_filename=MARKER).delete()
        return deleted


def _ok(response: Any) -> None:
    if response.status_code != 200:
        raise CommandError(f"{response.status_code}: {response.content[:300]!r}")
