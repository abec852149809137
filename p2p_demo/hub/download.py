"""Hub downloads: one file through huggingface_hub's cache, its errors mapped to ours, progress.

Without network the answer is ``HubUnavailable`` naming the cache and the bundled models that still
work; a missing repo, revision or gated repo is ``ModelNotFound``.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import Any, Callable

from ..errors import P2PError
from ..registry import HubUnavailable, ModelNotFound, available_bundled

ProgressCallback = Callable[[int, "int | None", str], None]  # (bytes done, total bytes or None, file name)


class RemoteMissing(P2PError):
    """The repo exists but has no such file (internal: try the next candidate)."""


def _callback_bar(callback: ProgressCallback) -> type:
    """A minimal tqdm stand-in that reports byte progress to ``callback(done, total, filename)``."""

    class _CallbackBar:
        def __init__(self, *args: Any, total: int | None = None, initial: int = 0, desc: str = "", **_: Any) -> None:
            self.total, self.n, self.desc = total, initial, desc

        def update(self, n: int = 1) -> None:
            self.n += n
            callback(self.n, self.total, self.desc)

        def update_transfer(self, n: int = 1) -> None:
            # Xet downloads report network bytes here and written bytes through update(); having
            # this method makes huggingface_hub use one bar, so the callback sees one stream.
            pass

        def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
            pass

        set_transfer_postfix_str = set_postfix_str

        def close(self) -> None:
            pass

        def __enter__(self) -> "_CallbackBar":
            return self

        def __exit__(self, *exc: Any) -> None:
            self.close()

    return _CallbackBar


def progress_class(progress: ProgressCallback | None, tqdm_class: Any) -> Any:
    if progress is not None and tqdm_class is not None:
        raise ValueError("pass either tqdm_class or progress, not both")
    return _callback_bar(progress) if progress is not None else tqdm_class


def _unavailable(repo_id: str, filename: str | None, reason: str, weights_dir: Any,
                 size_mb: float | None = None) -> HubUnavailable:
    from huggingface_hub import constants

    what = ", ".join(x for x in (filename, f"{size_mb:.0f} MB" if size_mb else None) if x)
    bundled = available_bundled(weights_dir)
    err = HubUnavailable(
        f"{repo_id}{f' ({what})' if what else ''} could not be downloaded: {reason}, and it is not in the "
        f"Hugging Face cache ({constants.HF_HUB_CACHE}). Bundled models still work: "
        f"{', '.join(bundled) if bundled else 'none is installed'}. To use this model, connect once "
        "(it stays cached under HF_HOME) or copy that cache folder from a machine that has it."
    )
    err.reason = reason
    return err


@functools.lru_cache(maxsize=2)
def _network_errors(any_http: bool) -> tuple[type[BaseException], ...]:
    """Connection-level exception classes of each HTTP client huggingface_hub may use: requests
    (before 1.0), httpx (1.x), httpx2 (later); only the installed ones are imported. With
    ``any_http`` also their base HTTP errors (a failed transfer, a bad status)."""
    classes: list[type[BaseException]] = [ConnectionError]
    for name in ("httpx2", "httpx"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        classes += [mod.ConnectError, mod.NetworkError, mod.TimeoutException, mod.ProxyError]
        if any_http:
            classes += [mod.HTTPError]  # TransportError, HTTPStatusError, ...
    try:
        import requests
    except ImportError:
        pass
    else:
        classes += [requests.ConnectionError, requests.Timeout]  # ProxyError is a ConnectionError
        if any_http:
            classes += [requests.RequestException]  # HTTPError, ...
    return tuple(classes)


def is_network_error(e: BaseException, *, any_http: bool = False) -> bool:
    """A connection-level failure, whichever HTTP client this huggingface_hub version uses."""
    return isinstance(e, _network_errors(any_http))


def hub_file(repo_id: str, filename: str, *, revision: str | None, token: str | bool | None,
              tqdm_class: Any, weights_dir: Any, size_mb: float | None = None) -> Path:
    """One file from the Hub through huggingface_hub's cache; errors mapped to ours."""
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import (
        FileMetadataError, GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled,
        RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError,
    )

    rev = revision or "main"

    def map_errors(e: Exception) -> Exception:
        if isinstance(e, GatedRepoError):
            return ModelNotFound(f"{repo_id} is gated on the Hub: accept its terms on "
                                 f"https://huggingface.co/{repo_id} and pass a token (token=... or HF_TOKEN)")
        if isinstance(e, RepositoryNotFoundError):
            return ModelNotFound(f"there is no model repository {repo_id!r} on the Hub "
                                 "(or it is private: pass a token, token=... or HF_TOKEN)")
        if isinstance(e, RevisionNotFoundError):
            return ModelNotFound(f"{repo_id} has no revision {rev!r} on the Hub")
        if isinstance(e, RemoteEntryNotFoundError):
            return RemoteMissing(filename)
        if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or is_network_error(e):
            if constants.is_offline_mode():
                reason = "offline mode is on (HF_HUB_OFFLINE=1)"
            elif isinstance(e.__cause__, FileMetadataError):  # something answered, but not like the Hub
                reason = (f"{constants.ENDPOINT} did not answer like the Hugging Face Hub (a proxy, captive "
                          "portal or wrong HF_ENDPOINT?)")
            else:
                reason = f"no network (could not reach {constants.ENDPOINT})"
            return _unavailable(repo_id, filename, reason, weights_dir, size_mb)
        if isinstance(e, HfHubHTTPError):
            status = e.response.status_code if e.response is not None else "?"
            return _unavailable(repo_id, filename, f"the Hub answered HTTP {status}", weights_dir, size_mb)
        if isinstance(e, OSError) or is_network_error(e, any_http=True):
            return _unavailable(repo_id, filename, f"the download failed ({e})", weights_dir, size_mb)
        return e

    # Without network and nothing cached, hf_hub_download retries for ~20 s before giving up. One
    # quick metadata request first makes that case fail at once (an uncached file needs it anyway).
    if not constants.is_offline_mode() and not isinstance(try_to_load_from_cache(repo_id, filename, revision=rev), str):
        try:
            get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=rev), token=token)
        except Exception as e:
            mapped = map_errors(e)
            if mapped is not e:
                raise mapped from None
            raise
    try:
        return Path(hf_hub_download(repo_id, filename, revision=rev, token=token, tqdm_class=tqdm_class,
                                    library_name="p2p_demo"))
    except Exception as e:
        mapped = map_errors(e)
        if mapped is not e:
            raise mapped from None
        raise
