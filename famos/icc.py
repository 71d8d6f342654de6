"""The sRGB ICC profile famos embeds, written here as an ICC version 2.1 display profile.

Version 2 because every reader takes it: print RIPs, preflight tools (checkit_tiff), Argyll's
iccdump and old Photoshop alike, where a version 4 profile (what LittleCMS builds) is called
outdated or cannot be read. A matrix/TRC profile: the IEC 61966-2.1 primaries adapted to the D50
connection space (Bradford), D50 media white, and the sRGB transfer curve as a 1024-entry table.
Nothing is read from disk or downloaded, and the bytes are the same on every machine.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import struct
import threading

# sRGB colorants in the D50 profile connection space (Bradford-adapted), as ICC.1 and the
# sRGB v2 profiles of the colour community give them
_RED = (0.4360747, 0.2225045, 0.0139322)
_GREEN = (0.3850649, 0.7168786, 0.0971045)
_BLUE = (0.1430804, 0.0606169, 0.7141733)
_D50 = (0.9642029, 1.0, 0.8249054)
DESCRIPTION = "sRGB IEC61966-2.1 (famos, ICC v2)"
COPYRIGHT = "No copyright, use freely"


def _s15f16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz(values: tuple[float, float, float]) -> bytes:
    return b"XYZ \0\0\0\0" + b"".join(_s15f16(v) for v in values)


def _curve(entries: int = 1024) -> bytes:
    def srgb_to_linear(x: float) -> float:
        return x / 12.92 if x <= 0.04045 else ((x + 0.055) / 1.055) ** 2.4

    table = [round(srgb_to_linear(i / (entries - 1)) * 65535) for i in range(entries)]
    return b"curv\0\0\0\0" + struct.pack(f">I{entries}H", entries, *table)


def _description(text: str) -> bytes:
    ascii_text = text.encode("ascii") + b"\0"
    # ASCII part, then empty Unicode and ScriptCode parts (the 67-byte ScriptCode field included)
    return b"desc\0\0\0\0" + struct.pack(">I", len(ascii_text)) + ascii_text + struct.pack(">IIHB", 0, 0, 0, 0) + b"\0" * 67


def _text(text: str) -> bytes:
    return b"text\0\0\0\0" + text.encode("ascii") + b"\0"


@functools.lru_cache(maxsize=1)
def srgb_v2_profile() -> bytes:
    curve = _curve()
    tags = [  # (signature, data); the three TRCs share one curve, as sRGB profiles do
        (b"desc", _description(DESCRIPTION)),
        (b"cprt", _text(COPYRIGHT)),
        (b"wtpt", _xyz(_D50)),
        (b"rXYZ", _xyz(_RED)),
        (b"gXYZ", _xyz(_GREEN)),
        (b"bXYZ", _xyz(_BLUE)),
        (b"rTRC", curve),
        (b"gTRC", curve),
        (b"bTRC", curve),
    ]
    table_size = 4 + 12 * len(tags)
    offset = 128 + table_size
    entries, blobs, placed = [], [], {}
    for signature, data in tags:
        if data not in placed:
            placed[data] = offset
            padded = data + b"\0" * (-len(data) % 4)  # every tag's data starts on a 4-byte boundary
            blobs.append(padded)
            offset += len(padded)
        entries.append(struct.pack(">4sII", signature, placed[data], len(data)))
    body = struct.pack(">I", len(tags)) + b"".join(entries) + b"".join(blobs)
    size = 128 + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"  # preferred CMM: none
        + struct.pack(">I", 0x02100000)  # version 2.1.0
        + b"mntrRGB XYZ "  # a display profile, RGB data, XYZ connection space
        + struct.pack(">6H", 2000, 1, 1, 0, 0, 0)  # a fixed date: equal renders stay byte-identical
        + b"acsp"
        + b"\0" * 4  # primary platform: none
        + b"\0" * 4  # flags
        + b"\0" * 8  # device manufacturer and model
        + b"\0" * 8  # device attributes
        + struct.pack(">I", 0)  # rendering intent: perceptual
        + b"".join(_s15f16(v) for v in _D50)  # the connection space's illuminant
        + b"\0" * 4  # creator
        + b"\0" * 44  # reserved (a version 4 profile ID would start here)
    )
    assert len(header) == 128
    return header + body


@dataclasses.dataclass(frozen=True)
class OutputTransform:
    """sRGB (famos's renders) into a print shop's output profile, as LittleCMS does it."""

    profile: bytes  # the shop's ICC profile (RGB or CMYK data)
    intent: int  # ICC rendering intent: 0 perceptual, 1 relative colorimetric, 2 saturation, 3 absolute
    black_point_compensation: bool = True

    @property
    def cmyk(self) -> bool:
        return self.profile[16:20] == b"CMYK"

    def build(self):
        """A LittleCMS transform; build one per thread (a transform keeps a cache)."""
        from PIL import ImageCms

        flags = ImageCms.Flags.BLACKPOINTCOMPENSATION if self.black_point_compensation else ImageCms.Flags.NONE
        return ImageCms.buildTransform(
            ImageCms.ImageCmsProfile(io.BytesIO(srgb_v2_profile())), ImageCms.ImageCmsProfile(io.BytesIO(self.profile)),
            "RGB", "CMYK" if self.cmyk else "RGB", renderingIntent=self.intent, flags=flags,
        )


# Printer profiles with large LUTs run to a few MB; past this a file is not a profile (or is /dev/zero).
MAX_PROFILE_BYTES = 64 * 2**20


def profile_bytes(path: str) -> bytes:
    """An output profile file's bytes, read once per version of the file (its size and mtime): the
    options' check, the sample count and the writer's transform all ask for it in one render.
    Only a regular file of at most ``MAX_PROFILE_BYTES`` is read (ValueError otherwise)."""
    import os
    import stat as kinds

    stat = os.stat(path)
    if not kinds.S_ISREG(stat.st_mode):
        raise ValueError(f"{path}: not a regular file, so not an ICC profile")
    if stat.st_size > MAX_PROFILE_BYTES:
        raise ValueError(f"{path}: {stat.st_size / 2**20:,.0f} MB, over the {MAX_PROFILE_BYTES >> 20} MB an ICC profile may have")
    return _read_profile(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_profile(path: str, size: int, mtime_ns: int) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(MAX_PROFILE_BYTES)  # bounded even if the file grew since its stat


def check_output_profile(data: bytes, *, name: str) -> None:
    """ValueError unless ``data`` is an ICC profile LittleCMS opens, with RGB or CMYK device data."""
    from PIL import ImageCms

    if len(data) < 128 or data[36:40] != b"acsp":
        raise ValueError(f"{name}: not an ICC profile")
    if data[16:20] not in (b"RGB ", b"CMYK"):
        raise ValueError(f"{name}: a {data[16:20].decode('ascii', 'replace').strip()} profile; an output profile "
                         "for famos has RGB or CMYK data")
    try:
        ImageCms.ImageCmsProfile(io.BytesIO(data))
    except (OSError, ImageCms.PyCMSError) as err:
        raise ValueError(f"{name}: LittleCMS cannot read it ({err})") from None


_proofs = threading.local()  # LittleCMS transforms keep a cache: one per thread, built once per profile


def _proof_transform(profile: bytes):
    from PIL import ImageCms

    built = _proofs.__dict__.setdefault("by_profile", {})
    if profile not in built:
        if len(built) >= 4:  # a viewer shows few files at once
            built.clear()
        cmyk = profile[16:20] == b"CMYK"
        built[profile] = ImageCms.buildTransform(
            ImageCms.ImageCmsProfile(io.BytesIO(profile)), ImageCms.ImageCmsProfile(io.BytesIO(srgb_v2_profile())),
            "CMYK" if cmyk else "RGB", "RGB", renderingIntent=1, flags=ImageCms.Flags.BLACKPOINTCOMPENSATION,
        )
    return built[profile]


def to_srgb(pixels, profile: bytes):
    """Device pixels (RGB or CMYK, uint8 (h, w, n)) described by ``profile``, as sRGB: what a file
    made for a shop's profile looks like on screen (a soft proof). Called per tile: the transform
    is built once per thread and profile."""
    import numpy as np
    from PIL import Image, ImageCms

    mode = "CMYK" if profile[16:20] == b"CMYK" else "RGB"
    image = Image.frombytes(mode, (pixels.shape[1], pixels.shape[0]), np.ascontiguousarray(pixels).tobytes())
    return np.asarray(ImageCms.applyTransform(image, _proof_transform(profile)))
