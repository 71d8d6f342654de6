from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Compression(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSION_UNSPECIFIED: _ClassVar[Compression]
    COMPRESSION_NONE: _ClassVar[Compression]
    COMPRESSION_DEFLATE: _ClassVar[Compression]
    COMPRESSION_ZSTD: _ClassVar[Compression]
    COMPRESSION_LZW: _ClassVar[Compression]
    COMPRESSION_JPEG: _ClassVar[Compression]

class BigTiff(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BIG_TIFF_UNSPECIFIED: _ClassVar[BigTiff]
    BIG_TIFF_AUTO: _ClassVar[BigTiff]
    BIG_TIFF_YES: _ClassVar[BigTiff]
    BIG_TIFF_NO: _ClassVar[BigTiff]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]
COMPRESSION_UNSPECIFIED: Compression
COMPRESSION_NONE: Compression
COMPRESSION_DEFLATE: Compression
COMPRESSION_ZSTD: Compression
COMPRESSION_LZW: Compression
COMPRESSION_JPEG: Compression
BIG_TIFF_UNSPECIFIED: BigTiff
BIG_TIFF_AUTO: BigTiff
BIG_TIFF_YES: BigTiff
BIG_TIFF_NO: BigTiff
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_CANCELLED: JobState

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[Model]
    def __init__(self, models: _Optional[_Iterable[_Union[Model, _Mapping]]] = ...) -> None: ...

class GetModelRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Halo(_message.Message):
    __slots__ = ("top", "left", "bottom", "right")
    TOP_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    top: int
    left: int
    bottom: int
    right: int
    def __init__(self, top: _Optional[int] = ..., left: _Optional[int] = ..., bottom: _Optional[int] = ..., right: _Optional[int] = ...) -> None: ...

class Model(_message.Message):
    __slots__ = ("name", "canvas_height", "canvas_width", "halo", "n_templates", "alignment", "backend", "device", "bundle_sha256", "training_steps", "noise_channels")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CANVAS_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CANVAS_WIDTH_FIELD_NUMBER: _ClassVar[int]
    HALO_FIELD_NUMBER: _ClassVar[int]
    N_TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    ALIGNMENT_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_SHA256_FIELD_NUMBER: _ClassVar[int]
    TRAINING_STEPS_FIELD_NUMBER: _ClassVar[int]
    NOISE_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    name: str
    canvas_height: int
    canvas_width: int
    halo: Halo
    n_templates: int
    alignment: int
    backend: str
    device: str
    bundle_sha256: str
    training_steps: int
    noise_channels: int
    def __init__(self, name: _Optional[str] = ..., canvas_height: _Optional[int] = ..., canvas_width: _Optional[int] = ..., halo: _Optional[_Union[Halo, _Mapping]] = ..., n_templates: _Optional[int] = ..., alignment: _Optional[int] = ..., backend: _Optional[str] = ..., device: _Optional[str] = ..., bundle_sha256: _Optional[str] = ..., training_steps: _Optional[int] = ..., noise_channels: _Optional[int] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("x", "y", "width", "height")
    X_FIELD_NUMBER: _ClassVar[int]
    Y_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    x: int
    y: int
    width: int
    height: int
    def __init__(self, x: _Optional[int] = ..., y: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class OutputSize(_message.Message):
    __slots__ = ("width", "height", "scale")
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    width: int
    height: int
    scale: float
    def __init__(self, width: _Optional[int] = ..., height: _Optional[int] = ..., scale: _Optional[float] = ...) -> None: ...

class RenderRequest(_message.Message):
    __slots__ = ("model", "seed", "region", "content_image", "chunk", "size")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_IMAGE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    model: str
    seed: int
    region: Region
    content_image: bytes
    chunk: int
    size: OutputSize
    def __init__(self, model: _Optional[str] = ..., seed: _Optional[int] = ..., region: _Optional[_Union[Region, _Mapping]] = ..., content_image: _Optional[bytes] = ..., chunk: _Optional[int] = ..., size: _Optional[_Union[OutputSize, _Mapping]] = ...) -> None: ...

class RenderResponse(_message.Message):
    __slots__ = ("started", "tile", "progress")
    STARTED_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    started: RenderStarted
    tile: Tile
    progress: Progress
    def __init__(self, started: _Optional[_Union[RenderStarted, _Mapping]] = ..., tile: _Optional[_Union[Tile, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ...) -> None: ...

class RenderStarted(_message.Message):
    __slots__ = ("region", "chunks_total", "strips_total", "description_json", "trained_dpi", "trained_resolution_unit")
    REGION_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STRIPS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_JSON_FIELD_NUMBER: _ClassVar[int]
    TRAINED_DPI_FIELD_NUMBER: _ClassVar[int]
    TRAINED_RESOLUTION_UNIT_FIELD_NUMBER: _ClassVar[int]
    region: Region
    chunks_total: int
    strips_total: int
    description_json: str
    trained_dpi: float
    trained_resolution_unit: str
    def __init__(self, region: _Optional[_Union[Region, _Mapping]] = ..., chunks_total: _Optional[int] = ..., strips_total: _Optional[int] = ..., description_json: _Optional[str] = ..., trained_dpi: _Optional[float] = ..., trained_resolution_unit: _Optional[str] = ...) -> None: ...

class Tile(_message.Message):
    __slots__ = ("y", "x", "height", "width", "rgb")
    Y_FIELD_NUMBER: _ClassVar[int]
    X_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    RGB_FIELD_NUMBER: _ClassVar[int]
    y: int
    x: int
    height: int
    width: int
    rgb: bytes
    def __init__(self, y: _Optional[int] = ..., x: _Optional[int] = ..., height: _Optional[int] = ..., width: _Optional[int] = ..., rgb: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("chunks_done", "chunks_total", "pixels_done", "pixels_total", "seconds")
    CHUNKS_DONE_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    PIXELS_DONE_FIELD_NUMBER: _ClassVar[int]
    PIXELS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    chunks_done: int
    chunks_total: int
    pixels_done: int
    pixels_total: int
    seconds: float
    def __init__(self, chunks_done: _Optional[int] = ..., chunks_total: _Optional[int] = ..., pixels_done: _Optional[int] = ..., pixels_total: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class TiffSettings(_message.Message):
    __slots__ = ("compression", "quality", "tile", "dpi", "pyramid", "bigtiff", "no_predictor", "no_icc", "artist", "copyright", "jpeg_subsampling", "resolution_unit", "level")
    COMPRESSION_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    DPI_FIELD_NUMBER: _ClassVar[int]
    PYRAMID_FIELD_NUMBER: _ClassVar[int]
    BIGTIFF_FIELD_NUMBER: _ClassVar[int]
    NO_PREDICTOR_FIELD_NUMBER: _ClassVar[int]
    NO_ICC_FIELD_NUMBER: _ClassVar[int]
    ARTIST_FIELD_NUMBER: _ClassVar[int]
    COPYRIGHT_FIELD_NUMBER: _ClassVar[int]
    JPEG_SUBSAMPLING_FIELD_NUMBER: _ClassVar[int]
    RESOLUTION_UNIT_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    compression: Compression
    quality: int
    tile: int
    dpi: float
    pyramid: bool
    bigtiff: BigTiff
    no_predictor: bool
    no_icc: bool
    artist: str
    copyright: str
    jpeg_subsampling: str
    resolution_unit: str
    level: int
    def __init__(self, compression: _Optional[_Union[Compression, str]] = ..., quality: _Optional[int] = ..., tile: _Optional[int] = ..., dpi: _Optional[float] = ..., pyramid: _Optional[bool] = ..., bigtiff: _Optional[_Union[BigTiff, str]] = ..., no_predictor: _Optional[bool] = ..., no_icc: _Optional[bool] = ..., artist: _Optional[str] = ..., copyright: _Optional[str] = ..., jpeg_subsampling: _Optional[str] = ..., resolution_unit: _Optional[str] = ..., level: _Optional[int] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("render", "output_name", "tiff")
    RENDER_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    TIFF_FIELD_NUMBER: _ClassVar[int]
    render: RenderRequest
    output_name: str
    tiff: TiffSettings
    def __init__(self, render: _Optional[_Union[RenderRequest, _Mapping]] = ..., output_name: _Optional[str] = ..., tiff: _Optional[_Union[TiffSettings, _Mapping]] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("id", "state", "model", "output_name", "strips_done", "strips_total", "strips_rendered", "pixels_total", "error", "size_bytes", "sha256", "created_at", "updated_at", "attempts")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_NAME_FIELD_NUMBER: _ClassVar[int]
    STRIPS_DONE_FIELD_NUMBER: _ClassVar[int]
    STRIPS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    STRIPS_RENDERED_FIELD_NUMBER: _ClassVar[int]
    PIXELS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    state: JobState
    model: str
    output_name: str
    strips_done: int
    strips_total: int
    strips_rendered: int
    pixels_total: int
    error: str
    size_bytes: int
    sha256: str
    created_at: float
    updated_at: float
    attempts: int
    def __init__(self, id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., model: _Optional[str] = ..., output_name: _Optional[str] = ..., strips_done: _Optional[int] = ..., strips_total: _Optional[int] = ..., strips_rendered: _Optional[int] = ..., pixels_total: _Optional[int] = ..., error: _Optional[str] = ..., size_bytes: _Optional[int] = ..., sha256: _Optional[str] = ..., created_at: _Optional[float] = ..., updated_at: _Optional[float] = ..., attempts: _Optional[int] = ...) -> None: ...

class JobRequest(_message.Message):
    __slots__ = ("id",)
    ID_FIELD_NUMBER: _ClassVar[int]
    id: str
    def __init__(self, id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("limit",)
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    limit: int
    def __init__(self, limit: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("offset", "data", "total_size")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    total_size: int
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ..., total_size: _Optional[int] = ...) -> None: ...
