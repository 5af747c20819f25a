"""`tubelet serve`: an HTTP server and a web page that classify uploaded videos.

    pip install 'tubelet[serve]'
    tubelet serve runs/default            # then open http://127.0.0.1:8000/

The server holds one :class:`~tubelet.inference.pipeline.Pipeline`; uploads are streamed to a
temporary folder under a size limit (:mod:`.uploads`), decoded into the pipeline's test views in a
few threads, and scored together in batches on one model thread (:mod:`.batching`), so it answers
what ``tubelet.pipeline`` answers for the same file. The API is described in docs/serve.md;
:mod:`.app` is the web application, :mod:`.page` its page, :mod:`.encoding` the attention map's
compact form. Its dependencies (Starlette, uvicorn, python-multipart) are an optional extra: only
:mod:`.commands` is imported by the ``tubelet`` command.
"""

from ..errors import TubeletError


class ServeError(TubeletError):
    """A server that cannot start (a missing extra, an address in use), with what to do."""


__all__ = ["ServeError"]
