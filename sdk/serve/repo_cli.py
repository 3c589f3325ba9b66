"""``hccatom export triton``: a bundle -> a Triton model repository (serve extra).

::

    hccatom export triton --bundle B --out REPO [--instance-kind gpu --tensorrt-fp16]

Exit codes as the other commands: 0 written, 2/3 bad input or bundle, 4 extra missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hccatom.path_checks import check_output_folder
from hccatom.serve.triton_repo import RepositoryOptions, check_repository, write_repository


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Add the ``export triton`` arguments to ``parser``."""
    d = RepositoryOptions()
    parser.add_argument("--bundle", type=Path, required=True, metavar="B",
                        help="bundle folder or .zip (checksums are verified first)")
    parser.add_argument("--out", type=Path, required=True, metavar="REPO",
                        help="repository folder to write (must be new or empty)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the contents of a non-empty --out")
    parser.add_argument("--max-batch-size", type=int, default=d.max_batch_size,
                        help=f"largest batch the dynamic batcher forms (default "
                             f"{d.max_batch_size}; 0 disables batching)")
    parser.add_argument("--queue-delay-us", type=int, default=d.queue_delay_us,
                        help=f"dynamic batcher queue delay in microseconds (default "
                             f"{d.queue_delay_us})")
    parser.add_argument("--max-queue-size", type=int, default=d.max_queue_size,
                        help="requests waiting per model before Triton refuses more "
                             "(default 0: unbounded)")
    parser.add_argument("--instance-kind", choices=("cpu", "gpu"), default=d.instance_kind,
                        help="run model instances on the CPU (default) or the GPU")
    parser.add_argument("--instance-count", type=int, default=d.instance_count,
                        help="model instances per model (default 1)")
    parser.add_argument("--tensorrt-fp16", action="store_true",
                        help="add the TensorRT accelerator with FP16 (GPU instances only)")


def run(args: argparse.Namespace) -> int:
    """Write and check the repository; print one line per model."""
    check_output_folder(args.out, "--out")  # before the bundle's checksums and the copies
    options = RepositoryOptions(
        max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us,
        max_queue_size=args.max_queue_size, instance_kind=args.instance_kind,
        instance_count=args.instance_count, tensorrt_fp16=args.tensorrt_fp16,
    )
    report = write_repository(args.bundle, args.out, options, overwrite=args.overwrite)
    check_repository(report.root)
    for m in report.models:
        print(f"{m.name}: {m.bundle_path} (max_batch_size {m.max_batch_size})")
    print(f"wrote {len(report.models)} models to {report.root} from bundle "
          f"{report.bundle_name} {report.bundle_version}; start a server with:\n"
          f"  docker run --rm {'--gpus all ' if args.instance_kind == 'gpu' else ''}"
          f"-p8000:8000 -p8001:8001 -p8002:8002 "
          f"-v {report.root.resolve()}:/models nvcr.io/nvidia/tritonserver:<yy.mm>-py3 "
          f"tritonserver --model-repository=/models")
    return 0
