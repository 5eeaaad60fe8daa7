"""Submitting and running predictions: every write of the ``Prediction`` row.

- ``submissions``: create (one or many), queue, retry, delete, the thumbnail, reconcile.
- ``batches``: the worker claims a batch and classifies it, one model call per version.
- ``uploads``: direct uploads (a presigned PUT to the bucket, then a commit).
- ``results``: every outcome of a batch stored at once; a prediction failed with a reason.

The life of one image::

    prediction_create() -> row (pending) + file -> on commit: tasks.prediction_run(id)
    -> prediction_batch_claim(): this prediction and those waiting beside it
    -> prediction_batch_run(): the runner classifies them in one call per version,
       prediction_complete_many() stores every outcome at once, events wake the waiters.
"""

from .batches import (
    BatchReport,
    ClaimedBatch,
    prediction_batch_claim,
    prediction_batch_fill,
    prediction_batch_run,
    prediction_claim,
    prediction_claim_more,
    prediction_process,
    prediction_release,
)
from .results import (
    FAILED_SERVER_MESSAGE,
    MISSING_FILE_MESSAGE,
    MODEL_INTEGRITY_MESSAGE,
    MODEL_UNAVAILABLE_MESSAGE,
    TOO_LONG_MESSAGE,
    prediction_complete_many,
    prediction_fail,
    prediction_failure_set,
    prediction_result_set,
)
from .submissions import (
    PREDICTION_RUN_TASK,
    SubmissionOutcome,
    media_delete,
    prediction_chunk_forward,
    prediction_create,
    prediction_create_many,
    prediction_delete,
    prediction_enqueue,
    prediction_enqueue_many,
    prediction_reconcile,
    prediction_retry,
    prediction_thumbnail,
)
from .uploads import DirectUpload, direct_upload_commit, direct_upload_create, direct_upload_sweep

__all__ = [
    "FAILED_SERVER_MESSAGE",
    "MISSING_FILE_MESSAGE",
    "MODEL_INTEGRITY_MESSAGE",
    "MODEL_UNAVAILABLE_MESSAGE",
    "PREDICTION_RUN_TASK",
    "TOO_LONG_MESSAGE",
    "BatchReport",
    "ClaimedBatch",
    "DirectUpload",
    "SubmissionOutcome",
    "direct_upload_commit",
    "direct_upload_create",
    "direct_upload_sweep",
    "media_delete",
    "prediction_batch_claim",
    "prediction_batch_fill",
    "prediction_batch_run",
    "prediction_chunk_forward",
    "prediction_claim",
    "prediction_claim_more",
    "prediction_complete_many",
    "prediction_create",
    "prediction_create_many",
    "prediction_delete",
    "prediction_enqueue",
    "prediction_enqueue_many",
    "prediction_fail",
    "prediction_failure_set",
    "prediction_process",
    "prediction_reconcile",
    "prediction_release",
    "prediction_result_set",
    "prediction_retry",
    "prediction_thumbnail",
]
