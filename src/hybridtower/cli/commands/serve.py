"""``hybridtower serve INDEX_DIR``: the HTTP search service and web page over an index."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "serve an index over HTTP: JSON search API, video files, thumbnails and a web page"
EPILOG = """\
routes:
  GET /                         the web page (search box, result grid, click to play)
  GET /search?q=TEXT&k=N&offset=M   JSON results (the hit schema of docs/service.md, plus URLs)
  POST /search/image?k=N        search by an example image (raw image body, Content-Type: image/*)
  GET /similar/ID?start=S&k=N   "more like this" (that video's or window's vector as the query)
  GET /videos/ID                an indexed video file (range requests supported)
  GET /videos/ID/playback       JSON: play the original, or a preview when browsers cannot play the file
  GET /videos/ID/preview        browser-playable H.264/MP4 preview (made on first request, cached)
  GET /videos/ID/thumbnail      JPEG of its middle frame (made on first request, cached)
  GET /examples                 example queries from the collection's own captions
  GET /healthz                  status, number of videos, model, index generation, batching
  GET /docs, /openapi.json      read-only API docs (served locally)
  (HEAD works wherever GET does)

examples:
  hybridtower serve my_index                         # http://127.0.0.1:8000/
  hybridtower serve my_index --port 8080 --max-k 50
  curl 'http://127.0.0.1:8000/search?q=a+red+ball+bounces&k=5'

The model loads once at start. Only files that are in the index can be served (URLs carry ids, never
paths; a file must still be a regular file inside an indexed folder, unchanged since indexing). The
service follows the index: a new generation written by `hybridtower index` is picked up within a few
seconds (--reload-interval). Requests must be addressed to localhost, 127.0.0.1, [::1] or --host;
add names with --allow-host. Concurrent queries are encoded in batches (--no-batching to turn off).
The service has no authentication: keep --host on loopback unless you trust the network.
Thumbnails are cached in INDEX_DIR/thumbnails (or a user cache folder when the index is read-only);
previews in --preview-cache (default ~/.cache/hybridtower/previews, never inside the index).
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
    p.add_argument("--preview-cache", default=None, metavar="DIR",
                   help="folder for browser-playable previews of files browsers cannot play (default "
                        "$XDG_CACHE_HOME/hybridtower/previews; not inside INDEX_DIR)")
    p.add_argument("--preview-max-seconds", type=float, default=120.0, metavar="S",
                   help="longest preview segment in seconds (default 120; at least 60)")
    p.add_argument("--preview-max-mb", type=int, default=2048, metavar="MB",
                   help="size bound of the preview cache folder (default 2048 MB; least recently used go first)")
    p.add_argument("--max-image-mb", type=float, default=16.0, metavar="MB",
                   help="largest image accepted by POST /search/image (default 16 MB)")
    p.add_argument("--title", default="hybridtower video search", help="title of the web page")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default info)")
    p.add_argument("--no-access-log", action="store_true", help="do not log every request")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer requests whose Host header is NAME (repeatable; default: localhost, "
                        "127.0.0.1, [::1] and --host). Others get 400 (DNS rebinding)")
    p.add_argument("--no-batching", action="store_true",
                   help="encode each query on its own instead of batching concurrent ones")
    p.add_argument("--batch-window-ms", type=float, default=2.0,
                   help="longest time a query waits for others to share its encode (default 2 ms; 0 = encode at once "
                        "what has queued; a query with no other search in flight never waits)")
    p.add_argument("--max-batch", type=int, default=32, help="most queries per batched encode (default 32)")
    p.add_argument("--query-cache", type=int, default=4096, metavar="N",
                   help="keep the vectors of the last N distinct queries (default 4096; 0 = off)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch threads for query encoding (default: torch's own). On a machine shared with other "
                        "work, 1 avoids threads spin-waiting for a descheduled partner (measured: 1 is faster with "
                        "--no-batching; docs/service.md)")
    p.add_argument("--reload-interval", type=float, default=2.0, metavar="SECONDS",
                   help="check the index for a new generation at most this often (default 2; negative = never)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ...core.errors import ConfigError
    from ...service import create_app, default_cache_dir
    from ...service.server import bind_socket, is_loopback, serve_forever

    if args.max_k < 1 or not 1 <= args.default_k <= args.max_k:
        raise ConfigError(f"need 1 <= --default-k ({args.default_k}) <= --max-k ({args.max_k})")
    if args.max_query_chars < 1:
        raise ConfigError(f"--max-query-chars must be positive, got {args.max_query_chars}")
    if not 0 <= args.batch_window_ms <= 1000 or args.max_batch < 1:
        raise ConfigError(f"need 0 <= --batch-window-ms ({args.batch_window_ms}) <= 1000 and --max-batch >= 1 "
                          f"({args.max_batch})")
    if args.query_cache < 0:
        raise ConfigError(f"--query-cache must be 0 (off) or positive, got {args.query_cache}")
    if args.preview_max_seconds < 60 or args.preview_max_mb < 1 or not 0 < args.max_image_mb <= 1024:
        raise ConfigError("need --preview-max-seconds >= 60, --preview-max-mb >= 1 and 0 < --max-image-mb <= 1024")
    from ...service.middleware import default_hosts, valid_host_name
    from ...service.previews import default_preview_dir

    preview_dir = Path(args.preview_cache or default_preview_dir())
    index_real = Path(args.index_dir).resolve()
    if preview_dir.resolve() == index_real or index_real in preview_dir.resolve().parents:
        raise ConfigError("--preview-cache must be outside INDEX_DIR (the index removes files it does not know)")

    bad = [h for h in args.allow_host if not valid_host_name(h)]
    if bad:
        raise ConfigError(f"--allow-host takes a host name or address without a port, got {bad[0]!r}")
    if args.threads is not None:
        if args.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
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
            allowed_hosts=default_hosts(args.host, args.allow_host),
            batching=not args.no_batching,
            batch_window_ms=args.batch_window_ms,
            max_batch=args.max_batch,
            query_cache=args.query_cache,
            reopen=lambda: open_searcher(args.index_dir, args.checkpoint, args.device),
            reload_interval_s=args.reload_interval,
            preview_dir=preview_dir,
            preview_max_seconds=args.preview_max_seconds,
            preview_max_bytes=args.preview_max_mb << 20,
            max_image_bytes=int(args.max_image_mb * (1 << 20)),
        )
        # warm the encoder at the batch sizes it will see and freeze the loaded heap (a full garbage
        # collection over it stalls every request in flight for ~0.3 s): the address printed below means ready
        from ...service.warmup import prepare_to_serve

        prepare_to_serve(searcher, None if args.no_batching else args.max_batch)
    except BaseException:
        sock.close()
        raise
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(args.host):
        print(f"warning: listening on {args.host}, not loopback; the service has no authentication",
              file=sys.stderr)
        if args.host in ("0.0.0.0", "::") and not args.allow_host:
            print("note: requests are answered only when addressed to localhost/127.0.0.1/[::1]; add the "
                  "names clients use with --allow-host NAME", file=sys.stderr)
    print(f"serving {len(searcher)} videos from {args.index_dir} at http://{shown}:{port}/  (Ctrl-C stops)",
          flush=True)
    serve_forever(app, sock, log_level=args.log_level, access_log=not args.no_access_log)
    return 0


def open_searcher(index_dir, checkpoint=None, device="cpu"):
    """Open the index and load its model once (a clear error if either does not match)."""
    from ...index.searcher import Searcher

    return Searcher.open(index_dir, checkpoint=checkpoint, device=device)
