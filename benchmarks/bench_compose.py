"""S3 Complete and CopyObject of a large object: time and bytes moved.

    python benchmarks/bench_compose.py --mib 1024 --part-mib 64 [--nodes 3] [--repo /path/to/checkout]

Starts ``--nodes`` real node processes with the S3 API (fsync=always by default) in a temp dir,
uploads a ``--mib`` MiB object in ``--part-mib`` MiB parts with boto3 (not timed), then times
CompleteMultipartUpload and a CopyObject of the result. For each it prints the seconds and the
bytes the node processes wrote (``wchar`` of /proc/<pid>/io, summed over the nodes: sockets and
files) and wrote to disk (``write_bytes``). Both objects are then read back through another
node and checked against the uploaded bytes' MD5. ``--repo`` runs the nodes from another
checkout (e.g. one from before commit by reference) for a before/after comparison. A script
that prints figures, not a test.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024


def io_counters(pids: list[int]) -> tuple[int, int]:
    """(wchar, write_bytes) summed over the processes."""
    wchar = disk = 0
    for pid in pids:
        fields = dict(
            line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines() if ": " in line
        )
        wchar += int(fields["wchar"])
        disk += int(fields["write_bytes"])
    return wchar, disk


def part_body(i: int, size: int) -> bytes:
    """Distinct bytes per part and per chunk (no two chunks alike: nothing deduplicates)."""
    return random.Random(i).randbytes(size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mib", type=int, default=1024, help="object size in MiB")
    ap.add_argument("--part-mib", type=int, default=64, help="part size in MiB (at least 5)")
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--fsync", default="always", choices=["always", "batch", "never"])
    ap.add_argument("--repo", type=Path, default=REPO_ROOT, help="checkout whose p2pstore the nodes run")
    args = ap.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    import boto3
    from botocore.config import Config

    import p2pstore
    from tests.support.processes import start_nodes, wait_for

    print(f"nodes run {Path(p2pstore.__file__).parent}")
    with tempfile.TemporaryDirectory(prefix="p2pstore-compose-") as tmp:
        nodes = start_nodes(Path(tmp), args.nodes, s3=True, fsync=args.fsync, gossip_interval=0.5)
        try:
            wait_for(lambda: all(len(n.get_json("/status")["members"]) == args.nodes for n in nodes), 30)
            import json
            import urllib.request

            key = {"access_key_id": "AKIDBENCHCOMPOSE0001", "secret": "bench-secret-0123456789", "name": "b",
                   "admin": True}  # fmt: skip
            req = urllib.request.Request(nodes[0].url + "/s3/keys", json.dumps(key).encode(), method="POST")
            urllib.request.urlopen(req, timeout=10).read()

            def client(i: int):
                return boto3.client(
                    "s3", endpoint_url=nodes[i].s3_url, aws_access_key_id=key["access_key_id"],
                    aws_secret_access_key=key["secret"], region_name="us-east-1",
                    config=Config(signature_version="s3v4", s3={"addressing_style": "path"},
                                  read_timeout=900, retries={"max_attempts": 1}),
                )  # fmt: skip

            s3 = client(0)
            s3.create_bucket(Bucket="bench")
            size, part = args.mib * MiB, args.part_mib * MiB
            uid = s3.create_multipart_upload(Bucket="bench", Key="big")["UploadId"]
            whole = hashlib.md5(usedforsecurity=False)
            done = []
            for i, off in enumerate(range(0, size, part)):
                body = part_body(i, min(part, size - off))
                whole.update(body)
                etag = s3.upload_part(Bucket="bench", Key="big", UploadId=uid, PartNumber=i + 1, Body=body)[
                    "ETag"
                ]
                done.append({"PartNumber": i + 1, "ETag": etag})
            pids = [n.pid for n in nodes if n.pid is not None]
            print(
                f"uploaded {size / 1e6:.0f} MB in {len(done)} parts; {args.nodes} nodes, fsync={args.fsync}"
            )

            def timed(what: str, call) -> None:
                w0, d0 = io_counters(pids)
                t0 = time.monotonic()
                try:
                    call()
                except Exception as exc:  # e.g. a 503 when replicas fell behind: report it, go on
                    print(f"{what}: FAILED after {time.monotonic() - t0:.2f} s: {exc}")
                    raise SystemExit(1) from None
                secs = time.monotonic() - t0
                w1, d1 = io_counters(pids)
                print(f"{what}: {secs:.2f} s; node processes wrote {(w1 - w0) / 1e6:,.1f} MB "
                      f"(sockets + files), {(d1 - d0) / 1e6:,.1f} MB to disk by the answer")  # fmt: skip
                # a replica still gathering chunks after the answer keeps writing: wait until the
                # nodes are quiet (under 1 MB in a second) and count that too
                last, quiet_since = w1, time.monotonic()
                while time.monotonic() - quiet_since < 1.0:
                    time.sleep(0.2)
                    now = io_counters(pids)[0]
                    if now - last > 1_000_000:
                        last, quiet_since = now, time.monotonic()
                w2, d2 = io_counters(pids)
                print(f"  … {(w2 - w0) / 1e6:,.1f} MB (sockets + files), {(d2 - d0) / 1e6:,.1f} MB to disk "
                      f"once quiet, {time.monotonic() - t0:.1f} s after the request")  # fmt: skip

            timed("CompleteMultipartUpload", lambda: s3.complete_multipart_upload(
                Bucket="bench", Key="big", UploadId=uid, MultipartUpload={"Parts": done}))  # fmt: skip
            timed("CopyObject", lambda: s3.copy_object(
                Bucket="bench", Key="copy", CopySource={"Bucket": "bench", "Key": "big"}))  # fmt: skip
            reader = client(1 % args.nodes)
            for name in ("big", "copy"):
                md5 = hashlib.md5(usedforsecurity=False)
                for piece in reader.get_object(Bucket="bench", Key=name)["Body"].iter_chunks(MiB):
                    md5.update(piece)
                if md5.hexdigest() != whole.hexdigest():
                    print(f"{name}: WRONG BYTES")
                    return 1
            print("both objects read back whole and correct")
        finally:
            for n in nodes:
                n.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
