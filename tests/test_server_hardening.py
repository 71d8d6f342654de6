"""Findings of a security review, each against a real server on a loopback port: one bad bundle
folder never breaks ListModels for everyone, a tampered bundle or an absurd scale is never
INTERNAL nor names a server path, and a stream whose graph returns fewer pixels fails."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil

import numpy as np
import pytest

grpc = pytest.importorskip("grpc")

from famos.clients.render_client import RenderClient, ServerError  # noqa: E402
from conftest import SERVER_MODEL  # noqa: E402
from famos.render_server.server import RenderServer  # noqa: E402

MODEL = SERVER_MODEL


@pytest.fixture
def folder(models, tmp_path):
    """A models folder of its own holding a copy of the tiny bundle, for the tests to tamper with."""
    own = tmp_path / "models"
    own.mkdir()
    shutil.copytree(models / MODEL, own / MODEL)
    return own


@pytest.fixture
def serve(start_render_server):
    return start_render_server


def tampered(folder, name: str, edit) -> None:
    """A copy of the tiny bundle called ``name`` whose manifest ``edit`` changed (a dict in, the
    manifest's text out, or None for the edited dict)."""
    shutil.copytree(folder / MODEL, folder / name)
    manifest = folder / name / "manifest.json"
    data = json.loads(manifest.read_text())
    text = edit(data)
    manifest.write_text(text if text is not None else json.dumps(data))


def rehashed(folder, name: str, file: str, data: bytes) -> None:
    """``file`` of bundle ``name`` replaced by ``data``, its manifest entry updated to match: the
    checksums pass, what they vouch for does not."""
    (folder / name / file).write_bytes(data)
    manifest = folder / name / "manifest.json"
    described = json.loads(manifest.read_text())
    described["files"][file] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest.write_text(json.dumps(described))


def set_steps(value):
    def edit(data):
        data["provenance"]["steps"] = value

    return edit


def set_path(keys: tuple[str, ...], raw: str):
    """Sets a nested key to ``raw`` JSON text (Infinity is no value json.dumps writes by choice)."""
    def edit(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = "@@"
        return json.dumps(data).replace('"@@"', raw)

    return edit


def deeply_nested(data):
    data["provenance"]["deep"] = "@@"
    return json.dumps(data).replace('"@@"', "[" * 100_000 + "]" * 100_000)


BROKEN = {
    "steps-text": set_steps("abc"),
    "steps-huge": set_steps(1e30),
    "steps-inf": set_path(("provenance", "steps"), "Infinity"),
    "canvas-float": set_path(("spec", "canvas", "height"), "256.0"),
    "halo-inf": set_path(("halo", "top"), "Infinity"),
    "alignment-nan": set_path(("alignment",), "NaN"),
    "opset-inf": set_path(("opset",), "-Infinity"),
    "style-inf": set_path(("spec", "style_sizes"), "[[Infinity, 3]]"),
    "nested": deeply_nested,
}


def no_server_paths(details: str, *folders) -> None:
    """No folder of the server's in the message, nor any absolute path (a model's files are named
    relative to it: "nested/manifest.json")."""
    for path in folders:
        assert str(path) not in details, details
    assert not re.search(r"(^|[\s('\"])/", details), details


def test_broken_bundles_are_left_out_of_the_list_and_answer_their_own_error(folder, serve, tmp_path, caplog):
    for name, edit in BROKEN.items():
        tampered(folder, name, edit)
    outside = tmp_path / "outside"
    shutil.copytree(folder / MODEL, outside)
    (folder / "linked-out").symlink_to(outside, target_is_directory=True)
    server = serve(folder)
    with RenderClient(f"127.0.0.1:{server.port}") as client, caplog.at_level(logging.WARNING, "famos.server"):
        for _ in range(2):  # polled: the reasons are logged once, not on every call
            assert [m.name for m in client.models()] == [MODEL]
        for name in (*BROKEN, "linked-out"):
            for call in (lambda: client.model(name), lambda: list(client.render(name))):
                with pytest.raises(ServerError) as err:
                    call()
                assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION, (name, err.value)
                assert name in err.value.details and "\n" not in err.value.details
                no_server_paths(err.value.details, folder, outside, tmp_path)
        left_out = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ListModels leaves out")]
    assert sorted(m.split("'")[1] for m in left_out) == sorted([*BROKEN, "linked-out"])
    assert client_model_is_intact(server)


def client_model_is_intact(server: RenderServer) -> bool:
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        return client.model(MODEL).canvas_height == 96


def test_files_linked_out_of_the_models_folder_are_refused_not_followed(folder, serve, tmp_path):
    outside = tmp_path / "secret.png"
    shutil.copy(folder / MODEL / "content.png", outside)
    shutil.copytree(folder / MODEL, folder / "file-link")
    (folder / "file-link" / "content.png").unlink()
    (folder / "file-link" / "content.png").symlink_to(outside)
    server = serve(folder)
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        assert [m.name for m in client.models()] == [MODEL]
        with pytest.raises(ServerError) as err:
            list(client.render("file-link"))
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "'content.png' is a symbolic link out of the models folder" in err.value.details
    no_server_paths(err.value.details, outside, tmp_path)


def test_a_graph_that_fails_to_load_is_failed_precondition_without_paths(folder, serve, tmp_path):
    shutil.copytree(folder / MODEL, folder / "bad-graph")
    rehashed(folder, "bad-graph", "model.onnx", b"not an onnx graph" * 10)
    server = serve(folder)
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        assert client.model("bad-graph").name == "bad-graph"  # described: it loads only to render
        with pytest.raises(ServerError) as err:
            list(client.render("bad-graph"))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "model.onnx" in err.value.details and "does not load" in err.value.details
        no_server_paths(err.value.details, folder, tmp_path)
        client.render_to_tiff(MODEL, tmp_path / "still.tif")


def failing_graph(bundle) -> bytes:
    """The bundle's graph with its image output reshaped to a fixed 17x17: it loads and compiles
    (the window's size is dynamic), and fails on every real window."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(bundle / "model.onnx"))
    image = next(o for o in model.graph.output if o.name == "image")
    image.name = "image_before"
    for node in model.graph.node:
        node.output[:] = ["image_before" if n == "image" else n for n in node.output]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array([1, 3, 17, 17], np.int64), "fixed_shape"))
    model.graph.node.append(onnx.helper.make_node("Reshape", ["image_before", "fixed_shape"], ["image"]))
    model.graph.output.append(onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, None))
    model.graph.output.remove(image)
    return model.SerializeToString()


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_a_graph_that_fails_mid_render_is_failed_precondition(folder, start_render_server, tmp_path, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    shutil.copytree(folder / MODEL, folder / "fails")
    rehashed(folder, "fails", "model.onnx", failing_graph(folder / MODEL))
    from famos.runners import Backend, RunnerOptions

    server = start_render_server(folder, runner=RunnerOptions(backend=Backend(backend)))
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        with pytest.raises(ServerError) as err:
            list(client.render("fails"))
        assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION, err.value
        assert "the model's graph failed on a " in err.value.details, err.value.details
        assert ("(onnxruntime: " if backend == "onnx" else "(openvino: ") in err.value.details, err.value.details
        no_server_paths(err.value.details, folder, tmp_path)
        client.render_to_tiff(MODEL, tmp_path / "still.tif")  # the server goes on


def test_famos_render_says_a_failing_graph_in_one_line_and_leaves_no_file(folder, tmp_path, capsys):
    from famos.cli import main as famos

    shutil.copytree(folder / MODEL, folder / "fails")
    rehashed(folder, "fails", "model.onnx", failing_graph(folder / MODEL))
    assert famos(["render", str(folder / "fails"), "--out", str(tmp_path / "x.tif"), "--backend", "onnx", "--quiet"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[-1].startswith("famos render: error: the model's graph failed on a 160x96 window (onnxruntime: "), lines
    assert "cannot be reshaped" in lines[-1] and "Traceback" not in "".join(lines)
    assert not list(tmp_path.glob("x.tif*"))


def test_a_backend_out_of_memory_is_over_limit_and_messages_keep_node_names():
    """Running out of memory on a window is the machine's state (RESOURCE_EXHAUSTED: a smaller
    chunk may fit), not a broken bundle; build paths go, a graph's node names stay."""
    from famos.errors import BundleError, OverLimit, window_failed

    arena = ("[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Conv node. "
             "Name:'/generator/unet/down.0/conv/Conv' Status Message: /onnxruntime_src/onnxruntime/core/framework/"
             "bfc_arena.cc:376 void* onnxruntime::BFCArena::AllocateRawInternal(size_t, bool, onnxruntime::Stream*) "
             "Failed to allocate memory for requested buffer of size 1073741824")
    err = window_failed("onnxruntime", (1, 3, 96, 160), RuntimeError(arena))
    assert isinstance(err, OverLimit) and not isinstance(err, BundleError)
    assert "ran out of memory on a 160x96 window" in str(err) and "--chunk" in str(err)
    assert "Name:'/generator/unet/down.0/conv/Conv'" in str(err) and "bfc_arena" not in str(err)
    other = window_failed("openvino", (1, 3, 32, 32), RuntimeError("Exception from src/x.cpp:12: [CPU] broken"))
    assert isinstance(other, BundleError) and str(other).endswith("(openvino: [CPU] broken)")


@pytest.mark.parametrize("scale", [1e308, 1.7976931348623157e308, 1e300])
def test_scales_that_overflow_are_invalid_argument(models, serve, scale):
    server = serve(models)
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        for call in (lambda: list(client.render(MODEL, scale=scale)),
                     lambda: client.submit(MODEL, output_name="huge.tif", scale=scale)):
            with pytest.raises(ServerError) as err:
                call()
            assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT, err.value
            assert "scale" in err.value.details


@pytest.mark.parametrize("crop", ["narrower", "shorter", "fewer"])
def test_a_stream_whose_graph_returns_fewer_pixels_fails(models, serve, crop):
    """A re-hashed graph that crops its output once streamed OK with tiles covering a fraction of
    the region; every strip is now checked against the plan, and the strips against the region."""
    server = serve(models)
    renderer = server.models.renderer(MODEL)
    strips = renderer.strips

    def cropped(task, **kw):
        source = strips(task, **kw)

        def generate():
            try:
                for row, strip in enumerate(source):
                    if crop == "fewer":
                        if row == 1:
                            return
                        yield strip
                    else:
                        yield strip[:, : strip.shape[1] // 2] if crop == "narrower" else strip[: len(strip) // 2]
            finally:
                source.close()

        return generate()

    renderer.strips = cropped
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        events = []
        with pytest.raises(ServerError) as err:
            for event in client.render(MODEL, chunk=32):
                events.append(event)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION, err.value
    assert f"model {MODEL!r} produced" in err.value.details
    expected = "of the region's 96 rows" if crop == "fewer" else "expected 160x32 px of 3 channels"
    assert expected in err.value.details, err.value.details
    tiles = [e for e in events if type(e).__name__ == "Piece"]
    assert all(t.pixels.shape[1] == 160 for t in tiles)  # nothing of a wrong strip was sent


def test_strip_shapes_equal_the_plan_for_an_honest_graph(models, serve, tmp_path):
    server = serve(models)
    with RenderClient(f"127.0.0.1:{server.port}") as client:
        pixels = np.zeros((96, 160), int)
        for event in client.render(MODEL, chunk=32):
            if type(event).__name__ == "Piece":
                h, w, _ = event.pixels.shape
                pixels[event.y : event.y + h, event.x : event.x + w] += 1
    assert (pixels == 1).all()
