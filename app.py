"""pix2pix sketch-to-image: the Gradio app (layout and event wiring only; the logic is p2p_demo.service).

Run: ``python app.py`` (http://127.0.0.1:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT as usual).
P2P_WEIGHTS_DIR points at another weights folder (its registry.json lists the models offered),
P2P_DEFAULT_MODEL picks the model loaded at start.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import os
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

try:  # Hugging Face Spaces (ZeroGPU); must come before anything imports torch
    import spaces
except ImportError:
    spaces = None

import gradio as gr

from p2p_demo import canvas as sketch
from p2p_demo import web, webrt
from p2p_demo.files import atomic_write
from p2p_demo.examples import example_paths
from p2p_demo.image import encode_image, load_image
from p2p_demo.service import EMPTY_SKETCH, MAX_SAMPLES, ModelManager, Output, UserMessage, new_seed

log = logging.getLogger("app")

DEFAULT_SAMPLES = 3
MAX_UPLOAD = "20mb"
# Small models (64 px) would otherwise show as stamps: fill the box; downloads keep the true size.
CSS = """
#output img, #edges img { width: 100%; height: 100%; object-fit: contain; }
#edges img { image-rendering: pixelated; }
""" + sketch.BROWSER_CSS
# What launch() always gets; tests and the benchmark launch with the same settings.
# show_error: where Gradio itself refuses a request before any of our code runs (a file path that
# was not uploaded, a string where a file belongs, too few arguments), the client gets Gradio's
# message instead of {"error": null}; our own refusals are gr.Error and shown either way.
LAUNCH_KWARGS = dict(run_history=False, ssr_mode=False, share=False, max_file_size=MAX_UPLOAD, css=CSS,
                     show_error=True)

HOW_IT_WORKS = """
**pix2pix** (Isola et al., *Image-to-Image Translation with Conditional Adversarial Networks*, CVPR 2017)
learns to turn one kind of image into another from pairs of examples: here, edge maps into pictures.

* The **generator** is a U-Net: an encoder halves the 256×256 input eight times down to a 1×1 code,
  a decoder grows it back, and skip connections carry the fine detail of every level across.
* It is trained against a **PatchGAN** discriminator that looks at (edges, picture) pairs in 70×70
  patches and says real or fake. The loss is the conditional GAN loss plus **λ·L1** (λ = 100) to the
  true picture: L1 gets the colours roughly right, the GAN makes them sharp.
* There is no noise input: the only randomness is **dropout** in the decoder, kept on when
  rendering. Each sample draws its own dropout masks from the seed, so the samples differ a little
  and the same seed gives the same pictures. *Deterministic* turns dropout off.
* Your drawing is first redrawn in the line style the model was trained on (thinned, redrawn at a
  fixed width, framed with a margin); photos go through HED (or Canny) edge detection first. The
  result is the edge map shown beside the output: exactly what the model sees.

Credits: pix2pix by Phillip Isola, Jun-Yan Zhu, Tinghui Zhou and Alexei A. Efros (2017) ·
OpenMoji drawings, CC BY-SA 4.0 · HED edge detector (Xie & Tu, 2015), weights under the MIT licence ·
Fashion-MNIST (Zalando Research), MIT licence.
"""


def _gpu(fn):
    """spaces.GPU on Spaces (a no-op off ZeroGPU); the function itself everywhere else."""
    return spaces.GPU(duration=20)(fn) if spaces is not None else fn


def _outputs(out: Output) -> tuple:
    return out.image, out.samples, out.edges, out.status, out.timings


def _uploaded(payload):
    """A file payload from a visitor or an API client, refused unless its file was uploaded.

    Inputs arrive unprocessed (preprocess=False), and Gradio vets a payload's path only when it is
    marked as a file (``"meta": {"_type": "gradio.FileData"}``); gr.Image does not insist on the
    mark, so an unmarked ``{"path": "/etc/passwd"}`` would reach load_image as it is: any client
    could have the server's own images rendered, or probe which files exist. Every real upload
    (browser or gradio_client) lies in Gradio's upload folder.
    """
    if not isinstance(payload, dict) or payload.get("path") is None:
        return payload  # nothing uploaded, or an editor blob's bytes
    uploads = Path(gr.utils.get_upload_folder()).resolve()
    if not Path(str(payload["path"])).resolve().is_relative_to(uploads):
        raise UserMessage("expected an uploaded image file; upload the image itself, not a path on the server")
    return payload


def _atomic_output_cache() -> None:
    """Make Gradio write output images into its cache atomically (a temp file, then a rename).

    Gradio 6.31 saves every output image with ``Path.write_bytes`` at a path named by the image's
    hash. A request whose output equals an earlier one (the same drawing gives the same edge map,
    the same seed the same samples) truncates and rewrites that file while another visitor's browser
    may still be downloading it, and that visitor gets an empty or cut image (concurrent /render
    calls of one drawing did; tests/test_reliability.py's load test checks none does). A rename
    never truncates.
    PNGs are written at zlib's fastest level (p2p_demo.image.encode_image), which takes a fifth
    off a live render; other formats go through Gradio's own encoder.
    """
    from gradio import processing_utils as pu

    if getattr(pu.save_pil_to_cache, "_atomic", False):
        return

    @pu.traced_sync("postprocess_save_pil_to_cache")
    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = encode_image(img, "png") if format.lower() == "png" else pu.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        atomic_write(path, lambda p: p.write_bytes(data))
        return str(path)

    save_pil_to_cache._atomic = True
    pu.save_pil_to_cache = save_pil_to_cache


@contextlib.contextmanager
def _as_toast(what: str):
    """A UserMessage becomes a Gradio error toast (and an error for API clients), and one log line."""
    try:
        yield
    except UserMessage as e:
        log.info("%s refused: %s", what, e)
        raise gr.Error(str(e), print_exception=False) from None


def _shown(fn):
    """``fn`` with its UserMessages shown as toasts; a generator function (the live canvas streams
    its render) stays a generator."""
    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def stream(*args, **kwargs):
            with _as_toast(fn.__name__):
                yield from fn(*args, **kwargs)

        return stream

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with _as_toast(fn.__name__):
            return fn(*args, **kwargs)

    return wrapper


def build_app(weights_dir: str | os.PathLike | None = None, default_model: str | None = None,
              *, warm: bool = True, max_queue: int = 16) -> gr.Blocks:
    weights_dir = weights_dir or os.environ.get("P2P_WEIGHTS_DIR") or None
    default_model = default_model or os.environ.get("P2P_DEFAULT_MODEL") or None
    manager = ModelManager(weights_dir=weights_dir, default=default_model)
    _atomic_output_cache()
    examples_files = example_paths()
    if warm:
        try:
            log.info("warmed %s in %.1f s", manager.default, manager.warm())
        except UserMessage as e:
            raise RuntimeError(f"the default model {manager.default!r} cannot be used: {e}") from e

    @_gpu
    @_shown
    def render_sketch(value, model, n, seed, deterministic):
        """The output as soon as sample 1 is ready (the gallery keeps the last samples meanwhile),
        then all samples."""
        for out in manager.render_sketch_live(value, model_id=model, n=n, seed=seed, deterministic=deterministic):
            image, samples, edges, status, timings = _outputs(out)
            yield image, gr.skip() if out.partial else samples, edges, status, timings

    @_gpu
    @_shown
    def render_photo(photo, model, n, seed, deterministic, edges):
        return _outputs(manager.render_upload(_uploaded(photo), model_id=model, n=n, seed=seed,
                                              deterministic=deterministic, edges=edges))

    @_shown
    def load_example(index):
        """An example drawing onto the canvas; the canvas' change event then renders it. The client
        names the example by its index in our list (the gallery sends it): nothing it sends is a path."""
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(examples_files):
            raise UserMessage(f"unknown example {index!r}; pick one by its number, 0 to {len(examples_files) - 1}")
        return sketch.encode(load_image(examples_files[index]))

    def render_active(tab, drawing, photo, model, n, seed, deterministic, edges):
        """Re-render whichever tab is showing."""
        if tab == "photo":
            yield render_photo(photo, model, n, seed, deterministic, edges)
        else:
            yield from render_sketch(drawing, model, n, seed, deterministic)

    def render(image, model, n, seed, deterministic, edges):
        """Render an image file (a sketch, a photo or an edge map) with a registry model.

        Returns the first sample, all samples, the edge map the model saw, a status line and the
        timings in seconds (edges, model, total).
        """
        return render_photo(image, model, n, seed, deterministic, edges)

    @_shown
    def switch_model(model, current, progress=gr.Progress()):
        manager.info(model)  # not a registry id (a forged value, not in the list): refused, as /render does
        try:
            description = manager.switch(model, progress)
        except UserMessage as e:
            gr.Warning(f"{e} Still using {manager.info(current).name}.")
            return current, current, manager.describe(current)
        return model, model, description

    with gr.Blocks(title="pix2pix: sketch to image") as demo:
        gr.Markdown("# ✏️ pix2pix: sketch → image\nDraw with the brush: the picture follows every stroke. "
                    "Or upload a photo in the *Photo* tab.")
        model_state = gr.State(manager.default)  # the model that is loaded and working
        active = gr.State("sketch")  # the tab whose input is rendered when an option changes
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=300):
                with gr.Tabs():
                    with gr.Tab("Sketch", id="sketch") as sketch_tab:
                        canvas = sketch.sketch_canvas(elem_id="sketch")
                        # Not gr.Examples: its events take the example as a gr.Image(type="filepath"),
                        # and Gradio would open and decode any path a client names there. This
                        # gallery sends the index of the example clicked.
                        examples = gr.Dataset(components=[gr.Image(visible=False, render=False)],
                                              samples=[[str(p)] for p in examples_files], type="index",
                                              label="Start from an example", elem_id="examples")
                    with gr.Tab("Photo", id="photo") as photo_tab:
                        photo = gr.Image(type="filepath", image_mode=None, sources=["upload", "clipboard"],
                                         label="Photo (or a drawing)", elem_id="photo")
                        photo_edges = gr.Radio(
                            [("Auto: HED for photos, drawings kept", "auto"), ("HED", "hed"),
                             ("Canny (fast)", "canny")],
                            value="auto", label="Edges", elem_id="photo-edges")
            with gr.Column(scale=3, min_width=300):
                output = gr.Image(label="Output (sample 1)", format="png", interactive=False, height=330,
                                  buttons=["download", "fullscreen"], elem_id="output")
                status = gr.Markdown(EMPTY_SKETCH, label="status", elem_id="status")
                sketch.browser_view("output")
            with gr.Column(scale=2, min_width=180):
                edge_view = gr.Image(label="What the model sees", format="png", interactive=False, height=220,
                                     buttons=["download"], elem_id="edges")
                sketch.browser_view("edges")
        # JPEG previews: a quarter of PNG's encoding time per sample; the main output stays PNG.
        gallery = gr.Gallery(label="Samples (dropout on)", format="jpeg", columns=MAX_SAMPLES, fit_columns=False,
                             height=190, object_fit="contain", interactive=False, elem_id="gallery")
        sketch.browser_view("samples")
        with gr.Row(equal_height=True):
            model = gr.Dropdown(manager.choices(), value=manager.default, label="Model", scale=3, elem_id="model")
            n = gr.Slider(1, MAX_SAMPLES, value=DEFAULT_SAMPLES, step=1, label="Samples", scale=2, elem_id="samples")
            seed = gr.Number(0, precision=0, minimum=0, maximum=2**32 - 1, label="Seed", scale=1, min_width=100,
                           elem_id="seed")
            roll = gr.Button("🎲", scale=0, min_width=50, elem_id="reroll")
            deterministic = gr.Checkbox(False, label="Deterministic (dropout off)", scale=1,
                                        elem_id="deterministic")
        model_info = gr.Markdown(manager.describe(manager.default), elem_id="model-info")
        with gr.Accordion("How it works", open=False):
            gr.Markdown(HOW_IT_WORKS)
        timings = gr.JSON(visible=False, label="timings")  # for API clients and the latency benchmark
        api_trigger = gr.Button(visible=False)  # carries the public /render endpoint

        outs = [output, gallery, edge_view, status, timings]
        # Inputs arrive unprocessed (preprocess=False): the service decodes the canvas' PNG and the
        # uploads itself, with load_image, which explains bad files.
        live = dict(trigger_mode="always_last", concurrency_limit=1, concurrency_id="render",
                    api_visibility="private", preprocess=False)
        everything = [active, canvas, photo, model_state, n, seed, deterministic, photo_edges]

        canvas.change(render_sketch, [canvas, model_state, n, seed, deterministic], outs,
                      show_progress="hidden", **live)
        gr.on([photo.change, photo_edges.change], render_photo,
              [photo, model_state, n, seed, deterministic, photo_edges], outs,
              show_progress="minimal", **live)
        sketch_tab.select(lambda: "sketch", None, active, api_visibility="private", queue=False).then(
            render_active, everything, outs, show_progress="hidden", **live)
        photo_tab.select(lambda: "photo", None, active, api_visibility="private", queue=False).then(
            render_active, everything, outs, show_progress="hidden", **live)
        # .change also fires when 🎲 sets the seed; always_last folds a slider drag into one render.
        gr.on([n.change, seed.change, deterministic.change], render_active, everything, outs,
              show_progress="hidden", **live)
        roll.click(new_seed, None, seed, api_visibility="private", queue=False)
        examples.click(load_example, examples, canvas, api_visibility="private", preprocess=False,
                       show_progress="hidden")
        model.input(switch_model, [model, model_state], [model, model_state, model_info],
                    show_progress="full", show_progress_on=[model_info], concurrency_limit=1,
                    concurrency_id="switch", api_visibility="private", preprocess=False).then(
            render_active, everything, outs, show_progress="hidden", **live)

        # The public API: an image file + options. Gradio does not decode the upload
        # (preprocess=False); load_image does, so every bad file gets the same clear message.
        api_trigger.click(render, [photo, model, n, seed, deterministic, photo_edges], outs,
                          api_name="render", preprocess=False, concurrency_limit=1, concurrency_id="render")
    demo.queue(max_size=max_queue)
    web.install(demo, manager)  # the browser renderer's files and headers (p2p_demo/web.py)
    return demo


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # ONNX Runtime Web for rendering in the browser, fetched while the model loads (a Space runs no
    # set-up script); until it is there, or if it cannot be had, drawings render on the server.
    webrt.fetch_in_background()
    try:
        demo = build_app()
    except (RuntimeError, ValueError) as e:  # no usable model: say so in one line
        raise SystemExit(f"error: {e}") from None
    demo.launch(**LAUNCH_KWARGS)


if __name__ == "__main__":
    main()
