"""The server's side of the gRPC seam: request messages to domain values, domain values to
response messages. Field by field through the shared value types (``famos.values``); enums by
name, so no table is typed twice. Requests are converted here and validated by the domain checks
(``RenderSettings``, ``Renderer.task``, ``TiffOptions``), once.
"""

from __future__ import annotations

import dataclasses
import json

from famos.errors import InvalidField
from famos.planning import Rect
from famos.tiff_options import BigTiff, Compression, ResolutionUnit, Subsampling, TiffOptions
from famos.values import Job, ModelInfo, Piece, Progress, Started
from famos.protos.famos.render.v1 import render_pb2 as pb
from famos.request import RenderRequest

_TIFF_DEFAULTS = TiffOptions()


def render_request(request: pb.RenderRequest, tiff: pb.TiffSettings | None = None) -> RenderRequest:
    """The request a message carries; ``tiff`` for a job's file (a stream's file is the client's)."""
    region = None
    if request.HasField("region"):
        r = request.region
        region = Rect(y=r.y, x=r.x, height=r.height, width=r.width)
    size = scale = None
    if request.HasField("size"):
        s = request.size
        if (s.width or s.height) and s.scale:
            raise InvalidField("size", "give width and height or a scale, not both")
        if s.width or s.height:
            size = (s.height, s.width)
        elif s.scale:
            scale = s.scale
        else:
            raise InvalidField("size", "is set but empty: give width and height or a scale")
    return RenderRequest(
        model=request.model, seed=request.seed, region=region, chunk=request.chunk,
        content=request.content_image, size=size, scale=scale,
        tiff=tiff_options(tiff) if tiff is not None else _TIFF_DEFAULTS,
    )


def tiff_options(settings: pb.TiffSettings) -> TiffOptions:
    """Zero fields take the TiffOptions defaults (proto3 cannot tell unset from zero); the
    compression threads are the server's choice."""
    return TiffOptions(
        tile=settings.tile or _TIFF_DEFAULTS.tile,
        compression=_enum(Compression, pb.Compression, settings.compression, "COMPRESSION_", _TIFF_DEFAULTS.compression),
        quality=settings.quality or _TIFF_DEFAULTS.quality,
        level=settings.level,
        predictor=not settings.no_predictor,
        dpi=settings.dpi or None,
        bigtiff=_enum(BigTiff, pb.BigTiff, settings.bigtiff, "BIG_TIFF_", _TIFF_DEFAULTS.bigtiff),
        pyramid=settings.pyramid,
        icc_profile=not settings.no_icc,
        unit=_named(ResolutionUnit, "resolution_unit", settings.resolution_unit, _TIFF_DEFAULTS.unit),
        subsampling=_named(Subsampling, "jpeg_subsampling", settings.jpeg_subsampling, _TIFF_DEFAULTS.subsampling),
        artist=settings.artist,
        copyright=settings.copyright,
    )


def _named(kind, field: str, value: str, default):
    if not value:
        return default
    try:
        return kind(value)
    except ValueError:
        raise InvalidField(field, f"{value[:40]!r}: use one of {', '.join(k.value for k in kind)}") from None


def _enum(kind, proto_enum, value: int, prefix: str, default):
    try:
        name = proto_enum.Name(value).removeprefix(prefix)
    except ValueError:
        raise InvalidField("tiff", f"unknown {kind.__name__} value {value}") from None
    return default if name == "UNSPECIFIED" else kind[name]


def model_message(info: ModelInfo) -> pb.Model:
    top, left, bottom, right = info.halo
    fields = dataclasses.asdict(info)
    fields["halo"] = pb.Halo(top=top, left=left, bottom=bottom, right=right)
    return pb.Model(**fields)


def job_message(job: Job) -> pb.Job:
    fields = dataclasses.asdict(job)
    fields["state"] = pb.JobState.Value(f"JOB_STATE_{job.state.name}")
    return pb.Job(**fields)


def region_message(rect: Rect) -> pb.Region:
    return pb.Region(x=rect.x, y=rect.y, width=rect.width, height=rect.height)


def render_event(event: object) -> pb.RenderResponse:
    if isinstance(event, Piece):
        height, width, _ = event.pixels.shape
        return pb.RenderResponse(
            tile=pb.Tile(y=event.y, x=event.x, height=height, width=width, rgb=event.pixels.tobytes())
        )
    if isinstance(event, Progress):
        return pb.RenderResponse(progress=pb.Progress(**dataclasses.asdict(event)))
    if isinstance(event, Started):
        return pb.RenderResponse(
            started=pb.RenderStarted(
                region=region_message(event.region),
                chunks_total=event.chunks_total,
                strips_total=event.strips_total,
                description_json=json.dumps(event.description, sort_keys=True),
                trained_dpi=event.trained.dpi if event.trained else 0.0,
                trained_resolution_unit=event.trained.unit.value if event.trained else "",
            )
        )
    raise TypeError(f"not a render event: {event!r}")
