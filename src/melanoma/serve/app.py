"""`melanoma serve`: the FastAPI app (run under uvicorn, bound to 127.0.0.1 unless told otherwise).

POST /predict        multipart: `image` (a file) and optional `age_approx`, `sex`, `anatom_site_general_challenge`
POST /predict/batch  multipart: several `images` files (metadata fields repeated in the same order, or absent)
GET  /health         {"status": "ok", ...};  GET /model: what model.json says

Bad input is a 4xx with {"error": "..."} and the server goes on serving: 400 malformed or empty request,
413 body over serve.max_body_mb or image over prepare.max_pixels, 415 not multipart or not an image type,
422 an image that does not decode or a bad metadata value. Uploads stay in memory: the body is read with a
size limit and parsed by melanoma.serve.multipart, never spooled to a file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from fastapi import FastAPI, Request  # module level: FastAPI resolves the handlers' annotations here
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect

from melanoma.config import ServeConfig
from melanoma.data.schema import AGE, SEX, SITE
from melanoma.data.images import BadImage
from melanoma.errors import EnvironmentProblem
from melanoma.serve.artifact import Artifact, BadMetadata
from melanoma.serve.batching import MicroBatcher
from melanoma.serve.multipart import MultipartError, Part, boundary_of, parse

log = logging.getLogger(__name__)
IMAGE_TYPES = ("image/jpeg", "image/png", "image/bmp", "image/tiff", "image/webp", "application/octet-stream")
FORM_FIELDS = (AGE, SEX, SITE)


class RequestProblem(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Service:
    """What the routes share: the artefact, the settings, the micro-batcher, the decode pool and the counts."""

    def __init__(self, art: Artifact, scfg: ServeConfig):
        self.art, self.scfg = art, scfg
        self.label = art.threshold(scfg.threshold)  # (name, value): refused at start when not exported
        self.pool = ThreadPoolExecutor(scfg.workers or (os.cpu_count() or 1), thread_name_prefix="decode")
        self.batcher = MicroBatcher(art.predict, scfg.max_batch, scfg.max_wait_ms / 1000.0)
        if scfg.warmup:
            # The decode path too: on the JAX backend this first call imports TensorFlow (seconds), which the
            # first requests would otherwise wait for.
            blank = art.preprocess(_tiny_jpeg())
            self.batcher.warmup(blank, art.meta.vector((-1, -1, -1)) if art.uses_meta else None)
            self.batcher.batches = self.batcher.images = 0  # /health counts served images only
        self.max_body = int(scfg.max_body_mb * 1024 * 1024)
        self.counts = {"without_metadata": 0}  # images a metadata model scored without any metadata (in /health)

    async def read_parts(self, request: Request) -> list[Part]:
        boundary = boundary_of(request.headers.get("content-type"))
        if boundary is None:
            raise RequestProblem(415, "send multipart/form-data (an `image` file part), got content type "
                                      f"{request.headers.get('content-type')!r}")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.max_body:
            raise RequestProblem(413, f"request body of {int(declared)} bytes exceeds serve.max_body_mb "
                                      f"({self.scfg.max_body_mb:g} MB)")
        body = bytearray()
        try:
            async for chunk in request.stream():  # chunked uploads have no Content-Length: count as they come
                body += chunk
                if len(body) > self.max_body:
                    raise RequestProblem(413, f"request body exceeds serve.max_body_mb ({self.scfg.max_body_mb:g} MB)")
        except ClientDisconnect:  # the client went away mid-upload: nobody to answer, nothing went wrong here
            log.info("serve: client disconnected during the upload (%d bytes received)", len(body))
            raise RequestProblem(400, "client disconnected during the upload") from None
        try:
            return parse(bytes(body), boundary, max_parts=self.scfg.max_images + 3 * self.scfg.max_images + 8)
        except MultipartError as e:
            raise RequestProblem(400, str(e)) from None

    async def score(self, images: list[Part], fields: dict[str, list[str]]) -> list[dict]:
        for name, values in fields.items():
            if values and len(values) != len(images):
                raise RequestProblem(422, f"{len(values)} {name} values for {len(images)} images: give one per "
                                          "image, in the same order, or none")
        metas, empty = [], 0
        for i in range(len(images)):
            try:
                codes = self.art.meta.codes(*(fields[f][i] if fields[f] else None for f in (SEX, AGE, SITE)))
            except BadMetadata as e:
                raise RequestProblem(422, _which(images, i, str(e))) from None
            metas.append(self.art.meta.vector(codes) if self.art.uses_meta else None)
            empty += self.art.meta.is_empty(codes)
        if self.art.uses_meta and empty:  # scored from the image alone (the model learnt it by metadata row dropout)
            self.counts["without_metadata"] += empty
            log.info("serve: %d of %d images without metadata (age, sex, site all empty)", empty, len(images))
        loop = asyncio.get_running_loop()
        xs = await asyncio.gather(*(loop.run_in_executor(self.pool, _decode, self.art, p) for p in images),
                                  return_exceptions=True)
        for i, x in enumerate(xs):
            if isinstance(x, RequestProblem):
                raise RequestProblem(x.status, _which(images, i, x.message))
            if isinstance(x, BaseException):
                raise x
        probs = await asyncio.gather(*(asyncio.wrap_future(self.batcher.submit(x, m)) for x, m in zip(xs, metas)))
        p = np.asarray(probs, dtype=np.float64)
        cal = self.art.calibrated(p)
        name, threshold = self.label
        return [{"filename": part.filename, "probability": float(pi), "calibrated_probability": float(ci),
                 "label": int(pi >= threshold), "threshold": {"name": name, "value": threshold},
                 "model_version": self.art.version} for part, pi, ci in zip(images, p, cal)]

    def split(self, parts: list[Part], file_field: str, many: bool) -> tuple[list[Part], dict[str, list[str]]]:
        files = [p for p in parts if p.name == file_field]
        unknown = sorted({p.name for p in parts} - {file_field, *FORM_FIELDS})
        if unknown:
            raise RequestProblem(400, f"unknown form field {unknown[0]!r} (expected {file_field!r} and optional "
                                      f"{', '.join(FORM_FIELDS)})")
        if not files:
            raise RequestProblem(400, f"no {file_field!r} file part in the form")
        if not many and len(files) > 1:
            raise RequestProblem(400, f"one {file_field!r} part per request (use /predict/batch for several)")
        if len(files) > self.scfg.max_images:
            raise RequestProblem(413, f"{len(files)} images exceed serve.max_images ({self.scfg.max_images})")
        fields = {}
        for f in FORM_FIELDS:
            values = [bytes(p.data).decode("utf-8", "replace") for p in parts if p.name == f]
            if not many and len(values) > 1:
                raise RequestProblem(422, f"{f} given {len(values)} times")
            fields[f] = values
        return files, fields


def create_app(art: Artifact, scfg: ServeConfig) -> FastAPI:
    svc = _Service(art, scfg)
    batcher = svc.batcher

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        yield
        batcher.close()
        svc.pool.shutdown(wait=False)

    app = FastAPI(title="melanoma", version=art.version, lifespan=lifespan,
                  description="Melanoma probability of a dermoscopy image")
    app.state.batcher, app.state.artifact = batcher, art

    @app.exception_handler(RequestProblem)
    async def problem(_request, exc: RequestProblem):
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def unexpected(_request, exc: Exception):  # a bug must not take the server down: 500, logged
        log.exception("serve: unexpected error")
        return JSONResponse({"error": f"internal error: {type(exc).__name__}"}, status_code=500)

    @app.post("/predict")
    async def predict(request: Request):
        files, fields = svc.split(await svc.read_parts(request), "image", many=False)
        return (await svc.score(files, fields))[0]

    @app.post("/predict/batch")
    async def predict_batch(request: Request):
        files, fields = svc.split(await svc.read_parts(request), "images", many=True)
        return {"predictions": await svc.score(files, fields), "model_version": art.version}

    @app.get("/health")
    async def health():
        return {"status": "ok", "model_version": art.version, "batching": batcher.stats(),
                "metadata": {"used": art.uses_meta, "images_without_metadata": svc.counts["without_metadata"]}}

    @app.get("/model")
    async def model_info():
        return art.info

    return app


def _which(images: list[Part], i: int, message: str) -> str:
    if len(images) == 1:
        return message
    return f"image {i + 1} ({images[i].filename or 'unnamed'}): {message}"


def _decode(art: Artifact, part: Part) -> np.ndarray | RequestProblem:
    """Model input of one upload, or the 4xx it earns (returned, not raised: it crosses a thread pool)."""
    ctype = (part.content_type or "application/octet-stream").split(";")[0].strip().lower()
    if ctype not in IMAGE_TYPES:
        return RequestProblem(415, f"content type {ctype!r} is not an image type ({', '.join(IMAGE_TYPES)})")
    if not part.data:
        return RequestProblem(400, "empty upload (0 bytes)")
    try:
        return art.preprocess(bytes(part.data))
    except BadImage as e:
        status = 413 if "max_pixels" in str(e) else 422
        return RequestProblem(status, f"not a usable image: {e}")


def serve(model_dir: str, scfg: ServeConfig) -> None:
    """Load the artefact, bind the port, and run uvicorn on that socket until interrupted."""
    import uvicorn

    art = Artifact.load(model_dir)
    app = create_app(art, scfg)
    sock = bind(scfg.host, scfg.port)  # before "serving" is logged: a port in use is one line, exit 3
    if scfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serve: listening on %s: reachable from other machines", scfg.host)
    log.info("serve: %s on http://%s:%d (micro-batches of up to %d, %g ms wait)", art.version, scfg.host,
             scfg.port, scfg.max_batch, scfg.max_wait_ms)
    config = uvicorn.Config(app, host=scfg.host, port=scfg.port, log_level="warning", access_log=False)
    with sock:
        uvicorn.Server(config).run(sockets=[sock])


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or EnvironmentProblem (exit 3) saying why not."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise EnvironmentProblem(f"serve: cannot resolve serve.host {host!r}: {e.strerror or e}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does: a restart reuses the port
    try:
        sock.bind(addr)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        hint = "stop the process holding it or choose another --port" if e.errno == errno.EADDRINUSE else \
            "choose another --host/--port"
        raise EnvironmentProblem(f"serve: cannot listen on {host}:{port}: {e.strerror or e}: {hint}") from None
    sock.set_inheritable(True)
    return sock


def _tiny_jpeg() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 96, 80)).save(buf, format="JPEG")
    return buf.getvalue()
