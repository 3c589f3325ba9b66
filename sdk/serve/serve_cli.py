"""``hccatom serve --bundle B``: the whole chain behind Triton (serve extra).

Prints one line ``hccatom serve: ready grpc=HOST:PORT http=... metrics=...`` on stdout when
the model is loaded; stops on SIGTERM/SIGINT after in-flight requests finish.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

from hccatom.serve.pytriton_server import Ports


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``serve`` arguments to ``parser``."""
    parser.add_argument("--bundle", type=Path, required=True, help="bundle folder or .zip")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda", "tensorrt"),
                        help="inference device of the served Predictor (default auto)")
    parser.add_argument("--step-size", type=float, default=0.5,
                        help="segmentation sliding-window step (fraction of a patch, "
                             "default 0.5, as in-process)")
    parser.add_argument("--no-mirroring", action="store_true",
                        help="segment without mirroring (faster, as mirroring=False)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0: all)")
    parser.add_argument("--grpc-port", type=int, default=8001,
                        help="gRPC port, what clients use (default 8001)")
    parser.add_argument("--http-port", type=int, default=8000,
                        help="HTTP port: health /v2/health/ready (default 8000)")
    parser.add_argument("--metrics-port", type=int, default=8002,
                        help="Prometheus metrics /metrics (default 8002)")
    parser.add_argument("--instances", type=int, default=1,
                        help="recommend calls running at once (default 1)")
    parser.add_argument("--max-queue", type=int, default=4,
                        help="requests waiting beyond those running; more get 'busy' "
                             "(default 4)")
    parser.add_argument("--max-request-mb", type=float, default=1024.0,
                        help="largest request accepted, MiB (default 1024)")
    parser.add_argument("--study-root", type=Path, default=None,
                        help="allow study_path requests for DICOM studies under this folder")
    parser.add_argument("--malloc", choices=("serving", "glibc"), default="serving",
                        help="serving (default): at most 2 malloc arenas, blocks of 1 MiB "
                             "or more in their own mappings and freed memory returned after "
                             "each request, so memory levels off; glibc: glibc's defaults")
    parser.add_argument("--exit-timeout", type=int, default=30,
                        help="seconds in-flight requests may take to finish on SIGTERM")


def run(args: argparse.Namespace) -> int:
    """Load the bundle, serve until signalled."""
    from hccatom.predictor import Predictor
    from hccatom.serve.allocator import use_serving_settings
    from hccatom.serve.pytriton_env import prepare
    from hccatom.serve.server import ServeOptions, serve

    prepare()  # extra, glibc, numpy, libpython: refused before the bundle loads
    if args.malloc == "serving":  # before the models load and the Triton server starts
        use_serving_settings()
    options = ServeOptions(
        ports=Ports(args.grpc_port, args.http_port, args.metrics_port, args.host),
        instances=args.instances, max_queue=args.max_queue,
        max_request_bytes=int(args.max_request_mb * 2**20), study_root=args.study_root,
        exit_timeout_s=args.exit_timeout, malloc_trim=args.malloc == "serving",
    )
    options.check()
    predictor = Predictor.from_bundle(args.bundle, device=args.device,
                                      step_size=args.step_size,
                                      mirroring=False if args.no_mirroring else None)
    progress = getattr(args, "progress", None)
    if progress is not None:
        progress.close()

    out = sys.stdout

    def ready(p: Ports) -> None:
        print(f"hccatom serve: ready grpc={p.host}:{p.grpc} http={p.host}:{p.http} "
              f"metrics={p.host}:{p.metrics}", file=out, flush=True)

    # PyTriton prints Triton's log on stdout: keep stdout for the ready line alone
    with contextlib.redirect_stdout(sys.stderr):
        serve(predictor, options, on_ready=ready)
    print("hccatom serve: stopped", file=sys.stderr, flush=True)
    return 0
