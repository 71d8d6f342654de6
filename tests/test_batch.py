"""Print-shop batch, the pure part: jobs-file parsing, validation, DPI/print size, panel geometry.

A stand-in engine supplies canvases, so nothing here loads a model or renders.
"""

from __future__ import annotations

import json
import pathlib

import pytest

from famos.planning import Rect
from famos.clients.batch.fields import ModelRef, check_output_name
from famos.clients.batch.jobs_file import BatchSettings, JobsFileError, load_jobs
from famos.units import Length, LengthUnit, dpi_for_print_size, panel_grid, panel_spans, parse_length
from famos.tiff_options import Compression, TiffOptions

HEADER = "model,output,content,dpi,print_size,seed,compression,panels,panel_overlap\n"


class CanvasOnly:
    """An engine that knows canvases (height, width) by bundle name and renders nothing."""

    def __init__(self, canvases: dict[str, tuple[int, int]]):
        self.canvases = canvases
        self.asked: list[ModelRef] = []

    def canvas(self, model: ModelRef) -> tuple[int, int]:
        from famos.errors import UserError

        self.asked.append(model)
        if model.name not in self.canvases:
            raise UserError(f"{model.path}: no such bundle folder")
        return self.canvases[model.name]

    def renders_any_size(self, model: ModelRef) -> bool:
        return True

    def fingerprint(self, model: ModelRef) -> str:
        return model.name

    def render(self, job, output, path, *, options) -> None:
        raise AssertionError("validation must not render")


def jobs_file(tmp_path: pathlib.Path, body: str, name: str = "jobs.csv") -> pathlib.Path:
    (tmp_path / "content.png").write_bytes(_png())
    path = tmp_path / name
    path.write_text(body)
    return path


def _png() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buffer, format="PNG")
    return buffer.getvalue()


def settings(tmp_path, **kw) -> BatchSettings:
    return BatchSettings(out=tmp_path / "out", **kw)


# A 1500x1000 px canvas: 150 dpi prints it at 10x6.67 in (25.4x16.9 cm).
ENGINE_CANVASES = {"poster": (1000, 1500), "wide": (200, 960)}


def test_valid_rows_become_jobs(tmp_path):
    path = jobs_file(tmp_path, HEADER + (
        "bundles/poster,a.tif,content.png,150,,3,lzw,,\n"
        "bundles/poster,b,,,25.4x16.93cm,,,,\n"
        "bundles/wide,c.tiff,,120,,,none,3x1,5mm\n"
    ))
    jobs = load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    a, b, c = jobs
    assert (a.row, a.dpi, a.seed, a.compression, a.content) == (2, 150.0, 3, Compression.LZW, tmp_path / "content.png")
    assert a.model == ModelRef("poster", tmp_path / "bundles" / "poster")
    assert [o.name for o in a.outputs] == ["a.tif"] and a.outputs[0].region is None
    # print size -> DPI: 1500 px over 10 in
    assert b.outputs[0].name == "b.tif" and b.dpi == pytest.approx(150.0, rel=1e-3)
    assert b.compression is Compression.DEFLATE and b.seed == 0
    assert [o.name for o in c.outputs] == ["c_r1c1.tiff", "c_r1c2.tiff", "c_r1c3.tiff"]
    overlap = round(5 / 25.4 * 120)
    assert c.outputs[1].region.x == c.outputs[0].region.width - overlap


def test_dpi_and_print_size_both_ways():
    # DPI -> print size is the canvas over the DPI; print size -> DPI inverts it
    assert dpi_for_print_size(width_px=1500, height_px=1000, print_size=(10.0, 1000 / 150)) == pytest.approx(150)
    # a 120x80 cm print trained at 150 dpi is 7087x4724 px (training rounds to whole pixels)
    dpi = dpi_for_print_size(width_px=7087, height_px=4724, print_size=(120 / 2.54, 80 / 2.54))
    assert dpi == pytest.approx(150, abs=0.05)
    with pytest.raises(ValueError, match="proportions"):
        dpi_for_print_size(width_px=1500, height_px=1000, print_size=(10.0, 10.0))


def test_output_size_from_pixels_scale_or_print_size_and_dpi(tmp_path):
    """One model, any size: pixels, a scale of the canvas, or print size x dpi; any two of
    pixels, print size and dpi fix the third."""
    path = jobs_file(tmp_path, "model,output,size,scale,dpi,print_size\n" + (
        "bundles/poster,px.tif,3000x2000,,300,\n"          # row 2: pixels at 300 dpi = 25.4x16.9 cm
        "bundles/poster,scaled.tif,,2.5,,\n"               # row 3: 3750x2500 at --dpi
        "bundles/poster,print.tif,,,150,60x40cm\n"         # row 4: 60x40 cm at 150 dpi = 3543x2362
        "bundles/poster,fit.tif,3000x2000,,,50.8x33.87cm\n"  # row 5: pixels and print size -> 150 dpi
        "bundles/poster,canvas.tif,,,150,\n"               # row 6: the model's canvas
    ))
    jobs = load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path, tiff=TiffOptions(dpi=120)))
    sizes = {j.name: (j.width, j.height, round(j.dpi, 1)) for j in jobs}
    assert sizes == {
        "px.tif": (3000, 2000, 300.0), "scaled.tif": (3750, 2500, 120.0), "print.tif": (3543, 2362, 150.0),
        "fit.tif": (3000, 2000, 150.0), "canvas.tif": (1500, 1000, 150.0),
    }
    width_cm, height_cm = next(j for j in jobs if j.name == "print.tif").print_size_cm
    assert (round(width_cm), round(height_cm)) == (60, 40)


def test_conflicting_sizes_are_reported(tmp_path):
    path = jobs_file(tmp_path, "model,output,size,scale,dpi,print_size\n" + (
        "bundles/poster,a.tif,300x200,2,150,\n"          # row 2: size and scale
        "bundles/poster,b.tif,300x200,,150,10x5cm\n"     # row 3: pixels, print size and dpi
        "bundles/poster,c.tif,0x200,,150,\n"             # row 4: empty size
        "bundles/poster,d.tif,,,50,60x40cm\n"            # row 5: under the dpi floor
    ))
    with pytest.raises(JobsFileError) as caught:
        load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    assert {(e.row, e.field) for e in caught.value.errors} == {(2, "scale"), (3, "print_size"), (4, "size"), (5, "dpi")}


def test_every_bad_row_is_reported_with_row_and_field_and_nothing_renders(tmp_path):
    path = jobs_file(tmp_path, HEADER + (
        "bundles/poster,ok.tif,,150,,,,,\n"            # row 2: fine
        "bundles/poster,../escape.tif,,150,,,,,\n"     # row 3: output leaves --out
        "bundles/poster,/abs.tif,,150,,,,,\n"          # row 4: absolute
        "bundles/poster,sub/x.tif,,150,,,,,\n"         # row 5: separator
        "bundles/poster,d.tif,missing.png,abc,,x,gif,,\n"  # row 6: content, dpi, seed, compression
        "bundles/nope,e.tif,,150,,,,,\n"               # row 7: unknown bundle
        "bundles/poster,f.tif,,150,30x20,,,,\n"        # row 8: a print size without a unit
        "bundles/poster,g.tif,,,,,,,\n"                # row 9: neither
        "bundles/poster,ok.tif,,200,,,,,\n"            # row 10: duplicate output
        ",h.png,,150,,,,0x2,1furlong\n"                # row 11: model, output, panels, overlap
    ))
    engine = CanvasOnly(ENGINE_CANVASES)
    with pytest.raises(JobsFileError) as caught:
        load_jobs(path, engine=engine, settings=settings(tmp_path))
    found = {(e.row, e.field) for e in caught.value.errors}
    assert found == {
        (3, "output"), (4, "output"), (5, "output"),
        (6, "dpi"), (6, "seed"), (6, "compression"),
        (7, "model"), (8, "print_size"), (9, "dpi"), (10, "output"),
        (11, "model"), (11, "output"), (11, "panels"), (11, "panel_overlap"),
    }
    message = str(caught.value)
    assert "row 3, output" in message and "nothing rendered" in message
    assert not (tmp_path / "out").exists()


def test_missing_content_is_a_row_error(tmp_path):
    path = jobs_file(tmp_path, HEADER + "bundles/poster,a.tif,nothere.png,150,,,,,\n")
    with pytest.raises(JobsFileError) as caught:
        load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    (error,) = caught.value.errors
    assert (error.row, error.field) == (2, "content") and "nothere.png" in error.message


def test_unknown_column_is_reported(tmp_path):
    path = jobs_file(tmp_path, "model,output,dpi,colour\nbundles/poster,a.tif,150,red\n")
    with pytest.raises(JobsFileError) as caught:
        load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    assert [(e.row, e.field) for e in caught.value.errors] == [(1, "colour")]


def test_dpi_floor_rejects_small_prints(tmp_path):
    # 1500 px at 60 dpi, or over 100 cm: both under the default floor of 100 dpi
    path = jobs_file(tmp_path, HEADER + (
        "bundles/poster,a.tif,,60,,,,,\n"
        "bundles/poster,b.tif,,,100x66.67cm,,,,\n"
        "bundles/poster,c.tif,,100,,,,,\n"
    ))
    engine = CanvasOnly(ENGINE_CANVASES)
    with pytest.raises(JobsFileError) as caught:
        load_jobs(path, engine=engine, settings=settings(tmp_path))
    assert [(e.row, e.field) for e in caught.value.errors] == [(2, "dpi"), (3, "print_size")]
    assert "below the floor of 100" in str(caught.value)
    # the floor is configurable
    jobs = load_jobs(path, engine=engine, settings=settings(tmp_path, min_dpi=30))
    assert [round(j.dpi) for j in jobs] == [60, 38, 100]


def test_default_dpi_and_compression_come_from_the_batch_options(tmp_path):
    path = jobs_file(tmp_path, HEADER + "bundles/poster,a.tif,,,,,,,\n")
    base = TiffOptions(dpi=300, compression=Compression.LZW)
    (job,) = load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path, tiff=base))
    assert (job.dpi, job.compression) == (300, Compression.LZW)


def test_bundles_folder_resolves_the_model_by_name(tmp_path):
    path = jobs_file(tmp_path, HEADER + "../bundles/poster,a.tif,,150,,,,,\n")
    store = tmp_path / "store"
    (job,) = load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path, bundles=store))
    assert job.model == ModelRef("poster", store / "poster")


def test_toml_and_json_jobs_files(tmp_path):
    toml = jobs_file(tmp_path, '[[job]]\nmodel = "b/poster"\noutput = "t.tif"\ndpi = 150\nseed = 4\n\n'
                               '[[job]]\nmodel = "b/poster"\noutput = "u.tif"\ndpi = "x"\n', name="jobs.toml")
    with pytest.raises(JobsFileError) as caught:
        load_jobs(toml, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    assert [(e.row, e.field) for e in caught.value.errors] == [(2, "dpi")]
    data = {"jobs": [{"model": "b/wide", "output": "j", "print_size": "8x1.6666in", "panels": "2x1"}]}
    path = jobs_file(tmp_path, json.dumps(data), name="jobs.json")
    (job,) = load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    assert job.dpi == pytest.approx(120) and [o.name for o in job.outputs] == ["j_r1c1.tif", "j_r1c2.tif"]


def test_each_bundle_is_asked_once(tmp_path):
    path = jobs_file(tmp_path, HEADER + "".join(f"b/poster,{i}.tif,,150,,,,,\n" for i in range(5)))
    engine = CanvasOnly(ENGINE_CANVASES)
    load_jobs(path, engine=engine, settings=settings(tmp_path))
    assert len(engine.asked) == 1


@pytest.mark.parametrize("name", ["..", "../a.tif", "a/b.tif", "a\\b.tif", "/etc/x.tif", "C:x.tif", ".hidden.tif", "a.png", ""])
def test_output_names_stay_inside_the_output_folder(name):
    with pytest.raises(ValueError):
        check_output_name(name)


def test_output_name_gets_a_tiff_suffix():
    assert check_output_name("print") == "print.tif"
    assert check_output_name("Print.TIFF") == "Print.TIFF"


def test_lengths():
    assert parse_length("32px") == Length(32, LengthUnit.PIXEL)
    assert parse_length("0") == Length(0, LengthUnit.PIXEL)
    assert parse_length("2.54cm").pixels(dpi=150) == 150
    assert parse_length("10mm").pixels(dpi=254) == 100
    assert parse_length("0.5in").pixels(dpi=300) == 150
    for bad in ("12", "3 feet", "-1mm", "1.5px"):
        with pytest.raises(ValueError):
            parse_length(bad)


@pytest.mark.parametrize("length", [1, 7, 96, 100, 161, 1000])
@pytest.mark.parametrize("count", [1, 2, 3, 5])
@pytest.mark.parametrize("overlap", [0, 1, 4, 13])
def test_panel_spans_cover_with_equal_sizes_and_the_overlap(length, count, overlap):
    size = -(-(length + (count - 1) * overlap) // count)
    try:
        spans = panel_spans(length, count, overlap)
    except ValueError:
        assert count > length or length - size < count - 1
        return
    assert len(spans) == count
    assert {s for _, s in spans} == {size if count > 1 else length}  # one paper width
    assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == length
    for (a, size), (b, _) in zip(spans, spans[1:]):
        assert b > a
        # at least the overlap; the rounding slack adds at most 2 px
        assert overlap <= a + size - b <= overlap + 2


def test_panel_grid_is_row_major_from_the_top_left():
    panels = panel_grid(height=96, width=160, cols=3, rows=2, overlap=8)
    assert [(p.row, p.col) for p in panels] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert panels[0].rect == Rect(0, 0, 52, 59)
    assert panels[-1].rect.bottom == 96 and panels[-1].rect.right == 160


def test_artist_and_copyright_columns_are_printable_ascii(tmp_path):
    path = jobs_file(tmp_path, "model,output,dpi,artist,copyright\n" + (
        "bundles/poster,a.tif,150,Jane Doe,(c) 2026 Jane Doe\n"
        "bundles/poster,b.tif,150,,\n"
    ))
    first, second = load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    assert (first.artist, first.copyright) == ("Jane Doe", "(c) 2026 Jane Doe")
    assert (second.artist, second.copyright) == (None, None)  # the batch's --artist/--copyright apply
    bad = jobs_file(tmp_path, "model,output,dpi,artist\nbundles/poster,c.tif,150,Jöns\n", name="bad.csv")
    with pytest.raises(JobsFileError) as caught:
        load_jobs(bad, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    assert {(e.row, e.field) for e in caught.value.errors} == {(2, "artist")}


def test_numbers_are_checked_with_the_ranges_the_renderer_takes(tmp_path):
    path = jobs_file(tmp_path, "model,output,dpi,seed\n" + (
        "bundles/poster,a.tif,0.5,1\n"            # row 2: under the TIFF writer's 1 dpi
        "bundles/poster,b.tif,1e6,1\n"            # row 3: over 100000
        "bundles/poster,c.tif,150,99999999999999999999\n"  # row 4: a seed past 64 bits
    ))
    with pytest.raises(JobsFileError) as caught:
        load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path, min_dpi=0.1))
    assert {(e.row, e.field) for e in caught.value.errors} == {(2, "dpi"), (3, "dpi"), (4, "seed")}


def test_a_column_name_or_value_with_line_breaks_is_reported_on_one_line(tmp_path):
    path = jobs_file(tmp_path, '"mo\ndel",output,seed\nbundles/poster,a.tif,"1\n2"\n')
    with pytest.raises(JobsFileError) as err:
        load_jobs(path, engine=CanvasOnly(ENGINE_CANVASES), settings=settings(tmp_path))
    lines = [str(e) for e in err.value.errors]
    assert len(str(err.value).splitlines()) == len(lines) + 1
    assert "row 1, mo\\ndel: unknown column" in lines and any("seed: '1\\n2'" in line for line in lines), lines
