"""pix2pix sketch-to-image: the Gradio app (layout and event wiring only; the logic is p2p_demo.service).

Run: ``python app.py`` (http://127.0.0.1:7860; GRADIO_SERVER_NAME / GRADIO_SERVER_PORT as usual).
P2P_WEIGHTS_DIR points at another weights folder (its registry.json lists the models offered),
P2P_DEFAULT_MODEL picks the model loaded at start.
"""

from __future__ import annotations

import logging
import os
from importlib import resources

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from p2p_demo import gradio_glue as glue  # first: it imports Spaces' `spaces` before anything imports torch

import gradio as gr

from p2p_demo import canvas as sketch
from p2p_demo import webrt
from p2p_demo.examples import example_paths
from p2p_demo.image import load_image
from p2p_demo.service import EMPTY_SKETCH, MAX_SAMPLES, ModelManager, Output, UserMessage, new_seed

log = logging.getLogger("app")

DEFAULT_SAMPLES = 3
# Small models (64 px) would otherwise show as stamps: fill the box; downloads keep the true size.
CSS = """
#output img, #edges img { width: 100%; height: 100%; object-fit: contain; }
#edges img { image-rendering: pixelated; }
""" + sketch.BROWSER_CSS
HOW_IT_WORKS = resources.files("p2p_demo").joinpath("static", "how_it_works.md").read_text(encoding="utf-8")


def _outputs(out: Output) -> tuple:
    return out.image, out.samples, out.edges, out.status, out.timings


def build_app(weights_dir: str | os.PathLike | None = None, default_model: str | None = None,
              *, warm: bool = True, max_queue: int = 16) -> gr.Blocks:
    """The app's Blocks. Start it with ``gradio_glue.launch(demo, ...)``: a bare ``demo.launch()``
    serves it without the in-browser renderer (its routes and headers come with glue.launch)."""
    weights_dir = weights_dir or os.environ.get("P2P_WEIGHTS_DIR") or None
    default_model = default_model or os.environ.get("P2P_DEFAULT_MODEL") or None
    manager = ModelManager(weights_dir=weights_dir, default=default_model)
    examples_files = example_paths()
    if warm:
        try:
            log.info("warmed %s in %.1f s", manager.default, manager.warm())
        except UserMessage as e:
            raise RuntimeError(f"the default model {manager.default!r} cannot be used: {e}") from e

    @glue.on_gpu
    @glue.shown
    def render_sketch(value, model, n, seed, deterministic):
        """The output as soon as sample 1 is ready (the gallery keeps the last samples meanwhile),
        then all samples."""
        for out in manager.render_sketch_live(value, model_id=model, n=n, seed=seed, deterministic=deterministic):
            image, samples, edges, status, timings = _outputs(out)
            yield image, gr.skip() if out.partial else samples, edges, status, timings

    @glue.on_gpu
    @glue.shown
    def render_photo(photo, model, n, seed, deterministic, edges):
        return _outputs(manager.render_upload(glue.uploaded(photo), model_id=model, n=n, seed=seed,
                                              deterministic=deterministic, edges=edges))

    @glue.shown
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

    @glue.shown
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
    glue.serve(demo, manager, css=CSS)  # the browser renderer, atomic outputs, the CSS (p2p_demo/gradio_glue.py)
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
    glue.launch(demo)


if __name__ == "__main__":
    main()
