"""What the app needs from Gradio beyond its public API, in one place.

app.py lays out the page and wires its events; everything below is how the app leans on Gradio
(and Spaces) where their public API does not reach:

* :func:`serve` makes a built ``gr.Blocks`` this app: the browser renderer beside it
  (:class:`p2p_demo.web.BrowserModels`), the output cache written atomically, the page's CSS.
  :func:`launch` then starts it with :data:`LAUNCH_KWARGS`, the browser renderer's routes and the
  cross-origin isolation headers (``p2p_demo.web``): the one way the app, the tests and the
  benchmarks start a server. :func:`browser_models` finds what :func:`serve` attached.
* :func:`uploaded`: the upload guard (a file payload is refused unless Gradio stored it).
* :func:`atomic_output_cache`: Gradio's ``save_pil_to_cache`` replaced by an atomic writer. It is
  written against Gradio :data:`GRADIO_VERSION`; tests/test_gradio_glue.py pins the installed
  version and the replaced function's behaviour, and another Gradio whose function takes other
  arguments keeps its own writer (one warning).
* :func:`shown`: a :class:`~p2p_demo.service.UserMessage` becomes an error toast (an error for API
  clients) and one log line.
* :func:`on_gpu`: ``spaces.GPU`` on a ZeroGPU Space, the function itself everywhere else. ``spaces``
  must be imported before torch is: import this module before anything that imports torch.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

try:  # Hugging Face Spaces (ZeroGPU); before anything imports torch
    import spaces
except ImportError:
    spaces = None

import gradio as gr

from .files import atomic_write
from .image import encode_image
from .service import UserMessage
from .web import BrowserModels, app_kwargs

log = logging.getLogger(__name__)

GRADIO_VERSION = "6.31.0"  # the Gradio whose save_pil_to_cache atomic_output_cache replaces (requirements.txt pins it)
MAX_UPLOAD = "20mb"
GPU_SECONDS = 20  # what one render may take on a ZeroGPU Space
# What every launch gets. show_error: where Gradio itself refuses a request before any of our code
# runs (a file path that was not uploaded, a string where a file belongs, too few arguments), the
# client gets Gradio's message instead of {"error": null}; our own refusals are gr.Error either way.
LAUNCH_KWARGS = dict(run_history=False, ssr_mode=False, share=False, max_file_size=MAX_UPLOAD, show_error=True)


@dataclass(frozen=True)
class _Served:
    models: BrowserModels
    css: str


_SERVED: "weakref.WeakKeyDictionary[gr.Blocks, _Served]" = weakref.WeakKeyDictionary()


def serve(demo: gr.Blocks, manager: Any, *, css: str = "") -> None:
    """Make ``demo`` this app: the browser renderer for ``manager``'s models beside it, atomic
    output images, ``css`` on the page. Start it with :func:`launch`."""
    atomic_output_cache()
    _SERVED[demo] = _Served(BrowserModels(manager), css)


def _served(demo: gr.Blocks) -> _Served:
    try:
        return _SERVED[demo]
    except KeyError:
        raise LookupError("this Gradio app was not set up by gradio_glue.serve (build it with app.build_app)") from None


def browser_models(demo: gr.Blocks) -> BrowserModels:
    """The browser renderer :func:`serve` attached to ``demo`` (its ``.manager`` holds the models)."""
    return _served(demo).models


def launch(demo: gr.Blocks, **kwargs: Any) -> Any:
    """``demo.launch`` with :data:`LAUNCH_KWARGS`, the page's CSS, and the browser renderer's routes
    and COOP/COEP headers added to Gradio's own server; ``kwargs`` (port, ``prevent_thread_lock``,
    ...) go to Gradio as given."""
    served = _served(demo)
    extra = kwargs.pop("app_kwargs", None) or {}
    return demo.launch(**{**LAUNCH_KWARGS, "css": served.css, **kwargs},
                       app_kwargs={**app_kwargs(served.models), **extra})


def uploaded(payload: Any) -> Any:
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


def atomic_output_cache() -> bool:
    """Make Gradio write output images into its cache atomically (a temp file, then a rename).

    Gradio 6.31 saves every output image with ``Path.write_bytes`` at a path named by the image's
    hash. A request whose output equals an earlier one (the same drawing gives the same edge map,
    the same seed the same samples) truncates and rewrites that file while another visitor's browser
    may still be downloading it, and that visitor gets an empty or cut image (concurrent /render
    calls of one drawing did; tests/test_reliability.py's load test checks none does). A rename
    never truncates. PNGs are written at zlib's fastest level (p2p_demo.image.encode_image), which
    takes a fifth off a live render; other formats go through Gradio's own encoder, to the same
    path Gradio would choose.

    True when the writer is in place; False (and one warning) when this Gradio's function takes
    other arguments than the one it replaces: then Gradio keeps its own.
    """
    from gradio import processing_utils as pu

    if getattr(pu.save_pil_to_cache, "_atomic", False):
        return True
    expected = ["img", "cache_dir", "name", "format"]
    if list(inspect.signature(pu.save_pil_to_cache).parameters) != expected:
        log.warning("Gradio %s's save_pil_to_cache is not the one this app replaces (written for %s): output "
                    "images are written the way Gradio writes them", gr.__version__, GRADIO_VERSION)
        return False

    @pu.traced_sync("postprocess_save_pil_to_cache")
    def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
        data = encode_image(img, "png") if format.lower() == "png" else pu.encode_pil_to_bytes(img, format)
        folder = Path(cache_dir) / pu.hash_bytes(data)
        folder.mkdir(exist_ok=True, parents=True)
        path = (folder / f"{name}.{format}").resolve()
        atomic_write(path, lambda p: p.write_bytes(data))
        return str(path)

    save_pil_to_cache._atomic = True
    save_pil_to_cache.replaced = pu.save_pil_to_cache  # Gradio's own, for the test that pins it
    pu.save_pil_to_cache = save_pil_to_cache
    return True


@contextlib.contextmanager
def _as_toast(what: str):
    try:
        yield
    except UserMessage as e:
        log.info("%s refused: %s", what, e)
        raise gr.Error(str(e), print_exception=False) from None


def shown(fn: Callable) -> Callable:
    """``fn`` with its UserMessages shown as error toasts (and one log line); a generator function
    (the live canvas streams its render) stays a generator."""
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


def on_gpu(fn: Callable) -> Callable:
    """``spaces.GPU`` on Spaces (a no-op off ZeroGPU); the function itself everywhere else."""
    return spaces.GPU(duration=GPU_SECONDS)(fn) if spaces is not None else fn
