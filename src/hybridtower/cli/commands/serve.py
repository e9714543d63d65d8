"""``hybridtower serve INDEX_DIR``: the HTTP search service and web page over an index."""

from __future__ import annotations

import argparse
import sys

HELP = "serve an index over HTTP: JSON search API, video files, thumbnails and a web page"
EPILOG = """\
routes:
  GET /                         the web page (search box, result grid, click to play)
  GET /search?q=TEXT&k=N        JSON results (id, video_id, name, score, video and thumbnail URLs, took_ms)
  GET /videos/ID                an indexed video file (range requests supported)
  GET /videos/ID/thumbnail      JPEG of its middle frame (made on first request, cached)
  GET /healthz                  status, number of videos, model

examples:
  hybridtower serve my_index                         # http://127.0.0.1:8000/
  hybridtower serve my_index --port 8080 --max-k 50
  curl 'http://127.0.0.1:8000/search?q=a+red+ball+bounces&k=5'

The model loads once at start. Only files that are in the index can be served (URLs carry ids, never
paths). The service has no authentication: keep --host on loopback unless you trust the network.
Thumbnails are cached in INDEX_DIR/thumbnails (or a user cache folder when the index is read-only).
See docs/service.md.
"""


def register(sub) -> None:
    p = sub.add_parser("serve", help=HELP, description=HELP, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("index_dir", metavar="INDEX_DIR", help="an index made by `hybridtower index`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0 = any free port)")
    p.add_argument("--checkpoint", default=None,
                   help="model checkpoint (default: the one recorded in the index manifest); a different "
                        "model than the index was built with is refused")
    p.add_argument("--device", default="cpu", help="torch device for the text encoder (default cpu)")
    p.add_argument("--max-k", type=int, default=100, help="largest k a request may ask for (default 100)")
    p.add_argument("--default-k", type=int, default=12, help="k when a request gives none (default 12)")
    p.add_argument("--max-query-chars", type=int, default=1000,
                   help="longer queries are cut to this many characters, with a note (default 1000)")
    p.add_argument("--thumbnail-dir", default=None, help="thumbnail cache folder (default INDEX_DIR/thumbnails)")
    p.add_argument("--title", default="hybridtower video search", help="title of the web page")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default info)")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.set_defaults(func=run)


def run(args) -> int:
    from ...core.errors import ConfigError
    from ...service import create_app, default_cache_dir
    from ...service.server import bind_socket, is_loopback, serve_forever

    if args.max_k < 1 or not 1 <= args.default_k <= args.max_k:
        raise ConfigError(f"need 1 <= --default-k ({args.default_k}) <= --max-k ({args.max_k})")
    if args.max_query_chars < 1:
        raise ConfigError(f"--max-query-chars must be positive, got {args.max_query_chars}")
    sock = bind_socket(args.host, args.port)  # fail fast, before the model loads
    try:
        searcher = open_searcher(args.index_dir, args.checkpoint, args.device)
        app = create_app(
            searcher,
            thumbnail_dir=args.thumbnail_dir or default_cache_dir(args.index_dir),
            max_k=args.max_k,
            default_k=args.default_k,
            max_query_chars=args.max_query_chars,
            title=args.title,
        )
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}, not loopback; the service has no authentication",
              file=sys.stderr)
    print(f"serving {len(searcher)} videos from {args.index_dir} at http://{shown}:{port}/  (Ctrl-C stops)",
          flush=True)
    serve_forever(app, sock, log_level=args.log_level, access_log=not args.no_access_log)
    return 0


def open_searcher(index_dir, checkpoint=None, device="cpu"):
    """Open the index and load its model once (a clear error if either does not match)."""
    from ...index.searcher import Searcher

    return Searcher.open(index_dir, checkpoint=checkpoint, device=device)
