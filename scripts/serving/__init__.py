"""The serving engine behind `serve` (scripts.tools.serve, the CLI): one module a job.

- `settings`: ServeSettings (checked before any process starts, picklable for workers and replicas),
  the constants and the environment a replica's process starts with;
- `failures`: why a request got no entities (Overloaded, TimedOut, NotReady, ModelFailed), worded once;
- `batcher`: the texts of concurrent requests gathered into one `nlp.pipe` call, in a worker thread,
  behind a bounded queue;
- `service`: the Service the app calls; LocalService, a uvicorn worker's model loaded in the
  background, then batched; loading a replica's pipeline; the /healthz description;
- `schema`: the request and answer bodies, as FastAPI validates them and /docs shows them;
- `request_checks`: what is wrong with a request, in one line naming the field or the limit and the fix;
- `body_limit`: the ASGI middleware that refuses a body over max_body_bytes before it is read whole;
- `http_app`: `create_app`, the FastAPI application every mode serves (`POST /ner`, `GET /healthz`,
  the page at `/`, page.html, and the schema at `/docs`);
- `supervisor`: one machine: uvicorn's supervisor of one worker process per replica;
- `ray_app`: a Ray cluster: the Ray Serve deployment, `ray_app` (the `serve deploy configs/serve.yaml`
  entry point) and `serve_on_ray`; the only module that imports Ray.

The model and its backend are server settings: no request names a file, a model or a backend. The
engine imports no CLI module, and nothing of scripts.tools (tests/test_layout.py checks both).
"""
