"""The gRPC servicer: converts messages to domain calls and domain results to messages.

No logic of its own and no status codes: domain errors propagate to ``interceptors.ErrorMapping``.
"""

from __future__ import annotations

import json
import os
import threading

from famos.planning import Rect
from famos.rendering import Progress
from famos.tiff import BigTiff, Compression, TiffOptions
from protos.famos.render.v1 import render_pb2 as pb
from protos.famos.render.v1 import render_pb2_grpc
from render_server.errors import InvalidArgument
from render_server.jobs import JobManager, JobRecord, JobState
from render_server.models import ModelInfo, ModelStore
from render_server.slots import RenderSlots
from render_server.streaming import Limits, Piece, RenderSpec, Started, prepare, stream_render

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RenderService"].full_name
DOWNLOAD_PIECE = 1 << 20
DEFAULT_JOB_LIMIT = 100

_COMPRESSION = {
    pb.COMPRESSION_UNSPECIFIED: Compression.DEFLATE,
    pb.COMPRESSION_NONE: Compression.NONE,
    pb.COMPRESSION_DEFLATE: Compression.DEFLATE,
    pb.COMPRESSION_ZSTD: Compression.ZSTD,
    pb.COMPRESSION_LZW: Compression.LZW,
    pb.COMPRESSION_JPEG: Compression.JPEG,
}
_BIGTIFF = {
    pb.BIG_TIFF_UNSPECIFIED: BigTiff.AUTO,
    pb.BIG_TIFF_AUTO: BigTiff.AUTO,
    pb.BIG_TIFF_YES: BigTiff.YES,
    pb.BIG_TIFF_NO: BigTiff.NO,
}
_JOB_STATE = {
    JobState.QUEUED: pb.JOB_STATE_QUEUED,
    JobState.RUNNING: pb.JOB_STATE_RUNNING,
    JobState.SUCCEEDED: pb.JOB_STATE_SUCCEEDED,
    JobState.FAILED: pb.JOB_STATE_FAILED,
    JobState.CANCELLED: pb.JOB_STATE_CANCELLED,
}


class RenderService(render_pb2_grpc.RenderServiceServicer):
    def __init__(self, *, models: ModelStore, jobs: JobManager, slots: RenderSlots, limits: Limits):
        self.models = models
        self.jobs = jobs
        self.slots = slots
        self.limits = limits

    def ListModels(self, request, context):
        return pb.ListModelsResponse(models=[model_message(m) for m in self.models.infos()])

    def GetModel(self, request, context):
        return model_message(self.models.info(request.name))

    def Render(self, request, context):
        prepared = prepare(self.models, render_spec(request), self.limits)
        cancel = threading.Event()
        # fires on cancel, disconnect, deadline and normal completion alike
        context.add_callback(cancel.set)
        with self.slots.slot(cancel=cancel):
            for event in stream_render(prepared, cancel=cancel, piece_bytes=self.limits.piece_bytes):
                yield render_event(event)

    def SubmitJob(self, request, context):
        record = self.jobs.submit(
            render_spec(request.render),
            options=tiff_options(request.tiff),
            output_name=request.output_name,
        )
        return job_message(record)

    def WatchJob(self, request, context):
        for record in self.jobs.watch(request.id, active=context.is_active):
            yield job_message(record)

    def CancelJob(self, request, context):
        return job_message(self.jobs.cancel(request.id))

    def ListJobs(self, request, context):
        if request.limit < 0:
            raise InvalidArgument("limit", f"{request.limit} is negative")
        return pb.ListJobsResponse(jobs=[job_message(r) for r in self.jobs.list(request.limit or DEFAULT_JOB_LIMIT)])

    def DownloadJob(self, request, context):
        path = self.jobs.result_path(request.id)
        with open(path, "rb") as fh:
            total = os.fstat(fh.fileno()).st_size
            offset = 0
            while context.is_active() and (data := fh.read(DOWNLOAD_PIECE)):
                yield pb.FileChunk(offset=offset, data=data, total_size=total)
                offset += len(data)


# messages -> domain


def render_spec(request: pb.RenderRequest) -> RenderSpec:
    region = None
    if request.HasField("region"):
        r = request.region
        if r.width < 1 or r.height < 1 or r.x < 0 or r.y < 0:
            raise InvalidArgument(
                "region", f"x={r.x} y={r.y} width={r.width} height={r.height}: needs x, y >= 0 and a positive size"
            )
        region = Rect(y=r.y, x=r.x, height=r.height, width=r.width)
    if not request.model:
        raise InvalidArgument("model", "is empty")
    if request.chunk < 0:
        raise InvalidArgument("chunk", f"{request.chunk} is negative")
    return RenderSpec(
        model=request.model, seed=request.seed, region=region, chunk=request.chunk, content_image=request.content_image
    )


def tiff_options(settings: pb.TiffSettings) -> TiffOptions:
    try:
        compression = _COMPRESSION[settings.compression]
        bigtiff = _BIGTIFF[settings.bigtiff]
    except KeyError:
        raise InvalidArgument("tiff", "unknown compression or bigtiff value") from None
    try:
        return TiffOptions(
            tile=settings.tile or 256,
            compression=compression,
            quality=settings.quality or 90,
            predictor=not settings.no_predictor,
            dpi=settings.dpi or None,
            bigtiff=bigtiff,
            pyramid=settings.pyramid,
            icc_profile=not settings.no_icc,
        )
    except ValueError as err:  # TiffOptions names the field in its message
        raise InvalidArgument("tiff", str(err)) from None


# domain -> messages


def model_message(info: ModelInfo) -> pb.Model:
    top, left, bottom, right = info.halo
    return pb.Model(
        name=info.name,
        canvas_height=info.canvas_height,
        canvas_width=info.canvas_width,
        halo=pb.Halo(top=top, left=left, bottom=bottom, right=right),
        n_templates=info.n_templates,
        alignment=info.alignment,
        backend=info.backend,
        device=info.device,
        bundle_sha256=info.bundle_sha256,
        training_steps=info.training_steps,
    )


def region_message(rect: Rect) -> pb.Region:
    return pb.Region(x=rect.x, y=rect.y, width=rect.width, height=rect.height)


def render_event(event: object) -> pb.RenderResponse:
    if isinstance(event, Piece):
        height, width, _ = event.pixels.shape
        return pb.RenderResponse(
            tile=pb.Tile(y=event.y, x=event.x, height=height, width=width, rgb=event.pixels.tobytes())
        )
    if isinstance(event, Progress):
        return pb.RenderResponse(
            progress=pb.Progress(
                chunks_done=event.chunks_done,
                chunks_total=event.chunks_total,
                pixels_done=event.pixels_done,
                pixels_total=event.pixels_total,
                seconds=event.seconds,
            )
        )
    if isinstance(event, Started):
        return pb.RenderResponse(
            started=pb.RenderStarted(
                region=region_message(event.region),
                chunks_total=event.chunks_total,
                strips_total=event.strips_total,
                description_json=json.dumps(event.description, sort_keys=True),
            )
        )
    raise TypeError(f"not a render event: {event!r}")


def job_message(record: JobRecord) -> pb.Job:
    return pb.Job(
        id=record.id,
        state=_JOB_STATE[record.state],
        model=record.model,
        output_name=record.output_name,
        strips_done=record.strips_done,
        strips_total=record.strips_total,
        strips_rendered=record.strips_rendered,
        pixels_total=record.pixels_total,
        error=record.error,
        size_bytes=record.size_bytes,
        sha256=record.sha256,
        created_at=record.created_at,
        updated_at=record.updated_at,
        attempts=record.attempts,
    )
