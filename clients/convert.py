"""The client's side of the gRPC seam: domain values to request messages, response messages to
the shared value types (``famos.values``). Enums map by name, so no table is typed twice."""

from __future__ import annotations

import dataclasses
import json

import grpc
import numpy as np

from famos.errors import InvalidField, UserError
from famos.planning import Rect
from famos.request import RenderRequest
from famos.tiff_options import ResolutionUnit, TiffOptions
from famos.values import Job, JobState, ModelInfo, Piece, Progress, Resolution, Started
from famos.protos.famos.render.v1 import render_pb2 as pb


class ServerError(UserError):
    """A call failed on the server (or could not reach it); ``code`` is the gRPC status code."""

    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


def render_request(request: RenderRequest, canvas: tuple[int, int] | None) -> pb.RenderRequest:
    """``request`` as a message, its output size as ``canvas`` (height, width) pixels (print sizes
    multiplied out here, ``famos.request.output_canvas``) or, where that needs the model's canvas,
    as its scale."""
    message = pb.RenderRequest(model=request.model, seed=request.seed, content_image=request.content, chunk=request.chunk)
    if request.region is not None:
        r = request.region
        message.region.CopyFrom(pb.Region(x=r.x, y=r.y, width=r.width, height=r.height))
    if canvas is not None:
        message.size.CopyFrom(pb.OutputSize(height=canvas[0], width=canvas[1]))
    elif request.scale is not None:
        message.size.CopyFrom(pb.OutputSize(scale=request.scale))
    return message


def tiff_settings(options: TiffOptions) -> pb.TiffSettings:
    if options.output_profile:  # a server job renders sRGB; the conversion runs where the file is written
        raise InvalidField("output-profile", "a server job writes sRGB: convert with famos client render "
                           "(the client writes the file) or famos batch without --server")
    if options.bits != 8:
        raise InvalidField("bits", "a server job writes 8 bits per sample: render 16-bit files with famos render "
                           "or famos batch without --server")
    return pb.TiffSettings(
        compression=pb.Compression.Value(f"COMPRESSION_{options.compression.name}"),
        quality=options.quality,
        level=options.level,
        tile=options.tile,
        dpi=options.dpi or 0.0,
        pyramid=options.pyramid,
        bigtiff=pb.BigTiff.Value(f"BIG_TIFF_{options.bigtiff.name}"),
        no_predictor=not options.predictor,
        no_icc=not options.icc_profile,
        artist=options.artist,
        copyright=options.copyright,
        jpeg_subsampling=options.subsampling.value,
        resolution_unit=options.unit.value,
    )


def _fields(cls, message) -> dict:
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(cls)}


def model_info(message: pb.Model) -> ModelInfo:
    fields = _fields(ModelInfo, message)
    h = message.halo
    fields["halo"] = (h.top, h.left, h.bottom, h.right)
    return ModelInfo(**fields)


def job(message: pb.Job) -> Job:
    fields = _fields(Job, message)
    try:
        fields["state"] = JobState[pb.JobState.Name(message.state).removeprefix("JOB_STATE_")]
    except (KeyError, ValueError):
        raise ServerError(grpc.StatusCode.UNKNOWN, f"unknown job state {message.state} (newer server?)") from None
    return Job(**fields)


def render_event(message: pb.RenderResponse) -> Started | Piece | Progress:
    kind = message.WhichOneof("event")
    if kind == "tile":
        t = message.tile
        if len(t.rgb) != t.height * t.width * 3:
            raise ServerError(grpc.StatusCode.DATA_LOSS, f"tile at ({t.x}, {t.y}): {len(t.rgb)} bytes for {t.width}x{t.height}")
        return Piece(t.y, t.x, np.frombuffer(t.rgb, np.uint8).reshape(t.height, t.width, 3))
    if kind == "progress":
        return Progress(**_fields(Progress, message.progress))
    if kind == "started":
        s = message.started
        region = Rect(y=s.region.y, x=s.region.x, height=s.region.height, width=s.region.width)
        trained = Resolution(s.trained_dpi, _named(ResolutionUnit, s.trained_resolution_unit)) if s.trained_dpi else None
        return Started(region, s.chunks_total, s.strips_total, json.loads(s.description_json), trained)
    raise ServerError(grpc.StatusCode.INTERNAL, f"unknown render event {kind!r} (newer server?)")


def _named(kind, value: str):
    try:
        return kind(value)
    except ValueError:
        raise ServerError(grpc.StatusCode.UNKNOWN, f"unknown {kind.__name__} {value[:40]!r} (newer server?)") from None
