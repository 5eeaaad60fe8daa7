// The whole journey of a TypeScript client of the imagerec API: types generated from the
// schema by openapi-typescript (var/clients/ts/schema.d.ts), requests made by openapi-fetch.
// tests/contract/test_typescript_client.py type-checks this file (tsc) and runs it (tsx)
// against the live stack, with these variables:
//   API_URL, API_TOKEN           the server and a token
//   PHOTO_DIR                    cat.jpg, coffee.jpg, rocket.jpg, damaged.png (a PNG the worker fails)
//   EXPECTED                     JSON: photo name -> class ids a right answer has in its top 3
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import createClient from "openapi-fetch";
import type { components, paths } from "../../../var/clients/ts/schema";

type Prediction = components["schemas"]["PredictionOutput"];

const env = (name: string): string => {
  const value = process.env[name];
  assert.ok(value, `${name} is not set`);
  return value;
};
const expected: Record<string, string[]> = JSON.parse(env("EXPECTED"));
const photo = (name: string): Uint8Array<ArrayBuffer> => new Uint8Array(readFileSync(join(env("PHOTO_DIR"), name)));

const api = createClient<paths>({ baseUrl: env("API_URL"), headers: { Authorization: `Token ${env("API_TOKEN")}` } });

// A binary field is a string in the generated types (format: binary); the bytes go in a
// FormData that the serializer builds from the files given here.
const multipart =
  (files: Array<[name: string, bytes: Uint8Array<ArrayBuffer>, type: string]>, fields: Record<string, string> = {}) =>
  (): FormData => {
    const form = new FormData();
    for (const [name, bytes, type] of files) form.append("image", new Blob([bytes], { type }), name);
    for (const [name, value] of Object.entries(fields)) form.append(name, value);
    return form;
  };

const isFinal = (prediction: Prediction): boolean => prediction.status === "succeeded" || prediction.status === "failed";

async function final(prediction: Prediction): Promise<Prediction> {
  for (let poll = 0; poll < 6 && !isFinal(prediction); poll++) {
    const { data } = await api.GET("/api/v1/predictions/{prediction_id}/", {
      params: { path: { prediction_id: prediction.id }, query: { wait: 30 } },
    });
    assert.ok(data);
    prediction = data;
  }
  assert.ok(isFinal(prediction), `${prediction.id} is still ${prediction.status}`);
  return prediction;
}

const topThree = (prediction: Prediction): string[] => prediction.predictions.slice(0, 3).map((p) => p.class_id);
const steps: string[] = [];

// 1. One image, waiting in the same request with `Prefer: wait` (201 once final).
const cat = await api.POST("/api/v1/predictions/", {
  params: { header: { Prefer: "wait=30" } },
  body: { image: "cat.jpg", top_k: 5 },
  bodySerializer: multipart([["cat.jpg", photo("cat.jpg"), "image/jpeg"]], { top_k: "5" }),
});
assert.ok(cat.data, JSON.stringify(cat.error));
assert.ok([201, 202].includes(cat.response.status));
assert.equal(cat.response.headers.get("Location"), cat.data.url);
const prediction = await final(cat.data);
assert.equal(prediction.status, "succeeded");
assert.ok(topThree(prediction).some((id) => expected["cat.jpg"].includes(id)), topThree(prediction).join());
steps.push("submit one and wait");

// 2. Several images in one batch: one entry each, in order; the text file refused alone.
const batch = await api.POST("/api/v1/predictions/batch/", {
  body: { image: ["coffee.jpg", "notes.jpg", "rocket.jpg"] },
  bodySerializer: multipart([
    ["coffee.jpg", photo("coffee.jpg"), "image/jpeg"],
    ["notes.jpg", new TextEncoder().encode("not an image"), "image/jpeg"],
    ["rocket.jpg", photo("rocket.jpg"), "image/jpeg"],
  ]),
});
assert.equal(batch.response.status, 202, JSON.stringify(batch.error));
assert.ok(batch.data);
assert.deepEqual(batch.data.results.map((entry) => entry.filename), ["coffee.jpg", "notes.jpg", "rocket.jpg"]);
assert.equal(batch.data.results[1].error?.code, "unsupported_media_type");
for (const index of [0, 2]) {
  const entry = batch.data.results[index];
  assert.ok(entry.prediction && entry.error === null);
  const done = await final(entry.prediction); // 3. poll (long-poll) each until final
  assert.ok(topThree(done).some((id) => expected[entry.filename].includes(id)), topThree(done).join());
}
steps.push("submit many", "poll");

// 4. The list, filtered: succeeded ones with this label, one per page.
const listed = await api.GET("/api/v1/predictions/", {
  params: { query: { status: "succeeded", label: prediction.label, page_size: 1 } },
});
assert.ok(listed.data && listed.data.count >= 1 && listed.data.results.length === 1);
assert.equal(listed.data.results[0].label, prediction.label);
steps.push("list with filters");

// 5. The image and its thumbnail, as bytes.
const image = await api.GET("/api/v1/predictions/{prediction_id}/image/", {
  params: { path: { prediction_id: prediction.id } },
  parseAs: "arrayBuffer",
});
const thumbnail = await api.GET("/api/v1/predictions/{prediction_id}/image/", {
  params: { path: { prediction_id: prediction.id }, query: { size: "thumb" } },
  parseAs: "arrayBuffer",
});
assert.equal(image.response.headers.get("Content-Type"), "image/jpeg");
assert.deepEqual(new Uint8Array(image.data as ArrayBuffer), new Uint8Array(photo("cat.jpg")));
assert.deepEqual([...new Uint8Array(thumbnail.data as ArrayBuffer).slice(0, 2)], [0xff, 0xd8]); // a JPEG
steps.push("image");

// 6. A review: a correction (the runner-up class), a confirmation instead, withdrawn.
const runnerUp = prediction.predictions[1];
const corrected = await api.POST("/api/v1/predictions/{prediction_id}/correction/", {
  params: { path: { prediction_id: prediction.id } },
  body: { label: runnerUp.label.toUpperCase(), new_class: false },
});
assert.ok(corrected.data, JSON.stringify(corrected.error));
assert.deepEqual([corrected.data.confirmed, corrected.data.class_id], [false, runnerUp.class_id]);
const confirmed = await api.POST("/api/v1/predictions/{prediction_id}/confirmation/", {
  params: { path: { prediction_id: prediction.id } },
});
assert.equal(confirmed.data?.confirmed, true);
const withdrawn = await api.DELETE("/api/v1/predictions/{prediction_id}/confirmation/", {
  params: { path: { prediction_id: prediction.id } },
});
assert.equal(withdrawn.response.status, 204);
steps.push("review");

// 7. An explanation of the runner-up class: requested with POST, read with GET until a PNG.
const where = { path: { prediction_id: prediction.id }, query: { class_id: runnerUp.class_id } };
const requested = await api.POST("/api/v1/predictions/{prediction_id}/explanation/", { params: where });
assert.ok(requested.data, JSON.stringify(requested.error));
assert.equal(requested.data.class_id, runnerUp.class_id);
let overlay = await api.GET("/api/v1/predictions/{prediction_id}/explanation/", { params: where, parseAs: "arrayBuffer" });
for (let poll = 0; poll < 240 && overlay.response.status === 202; poll++) {
  await new Promise((resolve) => setTimeout(resolve, 500));
  overlay = await api.GET("/api/v1/predictions/{prediction_id}/explanation/", { params: where, parseAs: "arrayBuffer" });
}
assert.equal(overlay.response.status, 200);
assert.equal(overlay.response.headers.get("Content-Type"), "image/png");
assert.deepEqual([...new Uint8Array(overlay.data as ArrayBuffer).slice(1, 4)], [0x50, 0x4e, 0x47]); // "PNG"
steps.push("explanation request and download");

// 8. Errors, each in the one shape with its code.
const unknown = await api.GET("/api/v1/predictions/{prediction_id}/", {
  params: { path: { prediction_id: "00000000-0000-4000-8000-000000000000" } },
});
const badTopK = await api.POST("/api/v1/predictions/", {
  body: { image: "cat.jpg", top_k: 999 },
  bodySerializer: multipart([["cat.jpg", photo("cat.jpg"), "image/jpeg"]], { top_k: "999" }),
});
const notAnImage = await api.POST("/api/v1/predictions/", {
  body: { image: "notes.jpg" },
  bodySerializer: multipart([["notes.jpg", new TextEncoder().encode("plain text"), "image/jpeg"]]),
});
const stranger = createClient<paths>({ baseUrl: env("API_URL"), headers: { Authorization: "Token not-a-token" } });
const anonymous = await stranger.GET("/api/v1/predictions/");
const retrySucceeded = await api.POST("/api/v1/predictions/{prediction_id}/retry/", {
  params: { path: { prediction_id: prediction.id } },
});
for (const [answer, status, code] of [
  [unknown, 404, "not_found"],
  [badTopK, 400, "max_value"],
  [notAnImage, 415, "unsupported_media_type"],
  [anonymous, 401, "authentication_failed"],
  [retrySucceeded, 409, "conflict"],
] as const) {
  assert.equal(answer.response.status, status);
  assert.equal(answer.error?.error.code, code);
  assert.ok(answer.error?.error.message);
}
// A failed prediction (damaged pixel data) is retried: pending again.
const damaged = await api.POST("/api/v1/predictions/", {
  params: { query: { wait: 30 } },
  body: { image: "damaged.png" },
  bodySerializer: multipart([["damaged.png", photo("damaged.png"), "image/png"]]),
});
assert.ok(damaged.data);
const failed = await final(damaged.data);
assert.equal(failed.status, "failed");
const retried = await api.POST("/api/v1/predictions/{prediction_id}/retry/", {
  params: { path: { prediction_id: failed.id } },
});
assert.equal(retried.response.status, 202);
assert.equal(retried.data?.status, "pending");
steps.push("errors");

// 9. Delete: 204, then gone.
const deleted = await api.DELETE("/api/v1/predictions/{prediction_id}/", {
  params: { path: { prediction_id: prediction.id } },
});
assert.equal(deleted.response.status, 204);
const gone = await api.GET("/api/v1/predictions/{prediction_id}/", {
  params: { path: { prediction_id: prediction.id } },
});
assert.equal(gone.error?.error.code, "not_found");
steps.push("delete");

console.log(`journey: ${steps.length} steps passed (${steps.join(", ")})`);
