"""REST API v1 of the predictions room, and what every room's API shares.

- ``predictions``: list, poll, delete, retry and image views; ``submissions``: submit one
  image or a batch; ``waiting``: ``?wait`` / ``Prefer: wait``.
- ``deprecation``: old forms still answered, with ``Deprecation`` / ``Sunset`` headers.
- ``inputs``: JSON bodies taken as the schema types them.
- ``compat``: which schema differences break a client (``manage.py api_compat``).
- ``serializers``: the prediction output the list, the poll and a waiting submit share.
- ``errors``: the error body ``{"error": {"code", "message", "field"}}`` and the exception handler.
- ``permissions``: who may do what, as DRF permission classes over ``predictions.access``.
- ``throttles``: per-user submit and read rates; ``base``: the async view they all build on.
- ``authentication``: DRF's token authentication, the token kept in the process while changes are heard.
- ``bodies``: the prediction as JSON, written directly (the hot paths), equal to ``serializers``.
- ``negotiation``: binary answers whatever the client accepts.
- ``dispatch`` + ``schema``: several views behind one URL, routed by method, each
  documented as its own operation in the OpenAPI schema; the schema's links.

The other rooms keep their API beside their services: ``predictions.reviews.api``
(correction, confirmation), ``predictions.registry.api`` (model versions, activation,
A/B, rollback), ``predictions.explanations.api`` (Grad-CAM), ``predictions.operations.stats``
(the aggregates). The URLs are in ``imagerec/urls.py`` (namespace ``api``).
"""
