#!/usr/bin/env python3
"""Package the filter's .wasm as an OCI image that Istio and Envoy Gateway can pull, without Docker.

Writes an OCI image layout directory (oci-layout, index.json, blobs/sha256/...) holding one image
in the Wasm image "compat" variant, the kind `FROM scratch` + `COPY plugin.wasm ./` builds:

- exactly one layer, `application/vnd.oci.image.layer.v1.tar+gzip`, a gzipped tar holding one
  regular file, `plugin.wasm`: the .wasm byte for byte;
- the manifest annotation `module.wasm.image/variant: compat`;
- an image config (`application/vnd.oci.image.config.v1+json`) whose rootfs.diff_ids is the
  digest of the uncompressed layer.

The output is reproducible: fixed tar metadata (mtime from SOURCE_DATE_EPOCH, else 0), gzip
without a timestamp or file name, canonical JSON. The same .wasm gives the same manifest digest.

Push the layout with any OCI tool (tag "0.1.0" below is the --tag; the layout holds one image):

    crane push target/oci/envoy-ratelimit-wasm REGISTRY/envoy-ratelimit-wasm:0.1.0
    oras cp --from-oci-layout target/oci/envoy-ratelimit-wasm:0.1.0 REGISTRY/envoy-ratelimit-wasm:0.1.0
    skopeo copy oci:target/oci/envoy-ratelimit-wasm:0.1.0 docker://REGISTRY/envoy-ratelimit-wasm:0.1.0

Standard library only. Prints the manifest digest (what a registry reports as the image digest: use
it in `oci://...@sha256:<digest>` or Istio's/Envoy Gateway's image `sha256`) and the .wasm's
sha256 (the `sha256` for an http(s):// URL serving the .wasm itself).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_WASM = ROOT / "target" / "filter" / "envoy_ratelimit_wasm.wasm"
DEFAULT_OUT = ROOT / "target" / "oci" / "envoy-ratelimit-wasm"

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
PLUGIN_FILE = "plugin.wasm"
WASM_MAGIC = b"\0asm"


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, annotations: dict | None = None) -> dict:
    d = {"mediaType": media_type, "digest": f"sha256:{sha256(data)}", "size": len(data)}
    if annotations:
        d["annotations"] = annotations
    return d


def layer_tar(wasm: bytes, mtime: int) -> bytes:
    """An uncompressed tar with one regular file, plugin.wasm, at the root, owned by root, 0644."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(PLUGIN_FILE)
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = mtime
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.type = tarfile.REGTYPE
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    buf = io.BytesIO()
    # No file name and mtime 0 in the gzip header: same input, same bytes.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(data)
    return buf.getvalue()


def build_image(wasm: bytes, *, os_name: str, architecture: str, mtime: int, title: str, version: str):
    """Returns (blobs by digest, manifest descriptor, summary) of the compat-variant image."""
    if not wasm.startswith(WASM_MAGIC):
        raise ValueError("not a WebAssembly module (the file does not start with \\0asm)")
    tar = layer_tar(wasm, mtime)
    layer = gzip_deterministic(tar)
    config = {
        "architecture": architecture,
        "os": os_name,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
        "history": [{"created_by": f"deploy/build-oci-image.py: COPY {PLUGIN_FILE} /"}],
    }
    config_bytes = canonical_json(config)
    manifest = {
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": descriptor(MEDIA_CONFIG, config_bytes),
        "layers": [descriptor(MEDIA_LAYER, layer)],
        "annotations": {
            # Required by the Wasm image spec for the compat variant with the OCI layer type.
            "module.wasm.image/variant": "compat",
            "org.opencontainers.image.title": title,
            "org.opencontainers.image.version": version,
        },
    }
    manifest_bytes = canonical_json(manifest)
    blobs = {sha256(b): b for b in (layer, config_bytes, manifest_bytes)}
    summary = {
        "manifest_digest": f"sha256:{sha256(manifest_bytes)}",
        "wasm_sha256": sha256(wasm),
        "wasm_size": len(wasm),
        "layer_digest": f"sha256:{sha256(layer)}",
        "config_digest": f"sha256:{sha256(config_bytes)}",
    }
    return blobs, descriptor(MEDIA_MANIFEST, manifest_bytes), summary


def write_layout(out: Path, blobs: dict[str, bytes], manifest_desc: dict, tag: str) -> None:
    """Writes the OCI image layout at `out` (replacing an earlier one there)."""
    if out.exists():
        if not (out / "oci-layout").exists():
            raise SystemExit(f"{out} exists and is not an OCI image layout; refusing to replace it")
        shutil.rmtree(out)
    (out / "blobs" / "sha256").mkdir(parents=True)
    for digest, data in blobs.items():
        (out / "blobs" / "sha256" / digest).write_bytes(data)
    (out / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": "1.0.0"}))
    entry = dict(manifest_desc, annotations={"org.opencontainers.image.ref.name": tag})
    index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [entry]}
    (out / "index.json").write_bytes(canonical_json(index))


def write_tarball(layout: Path, tar_path: Path, mtime: int) -> None:
    """The layout as a tar archive (what `oras cp --from-oci-layout x.tar:TAG` and
    `skopeo copy oci-archive:x.tar:TAG` read), with fixed metadata."""
    files = sorted(p for p in layout.rglob("*"))
    with tarfile.open(tar_path, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in files:
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(layout)))
            info.mtime = mtime
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_dir():
                tar.addfile(info)
            else:
                with path.open("rb") as f:
                    tar.addfile(info, f)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wasm", type=Path, default=DEFAULT_WASM, help=f"the filter (default: {DEFAULT_WASM.relative_to(ROOT)})")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"layout directory to write (default: {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--tag", default="0.1.0", help="the layout's ref name, used as DIR:TAG by oras/skopeo (default: 0.1.0)")
    parser.add_argument("--tar", type=Path, help="also write the layout as a tar archive to this path")
    parser.add_argument("--platform", default="wasip1/wasm", help="os/architecture recorded in the image config (default: wasip1/wasm)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)

    os_name, _, architecture = args.platform.partition("/")
    if not os_name or not architecture:
        parser.error("--platform must be os/architecture, e.g. wasip1/wasm or linux/amd64")
    try:
        wasm = args.wasm.read_bytes()
    except OSError as e:
        print(f"cannot read {args.wasm}: {e.strerror} (build it first: make build)", file=sys.stderr)
        return 2
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    try:
        blobs, manifest_desc, summary = build_image(
            wasm, os_name=os_name, architecture=architecture, mtime=mtime,
            title="envoy-ratelimit-wasm", version=args.tag,
        )
    except ValueError as e:
        print(f"{args.wasm}: {e}", file=sys.stderr)
        return 2
    write_layout(args.out, blobs, manifest_desc, args.tag)
    if args.tar:
        write_tarball(args.out, args.tar, mtime)
    summary.update(layout=str(args.out), tag=args.tag, tar=str(args.tar) if args.tar else None)

    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"OCI image layout: {args.out} (tag {args.tag})" + (f", archive {args.tar}" if args.tar else ""))
    digest = summary["manifest_digest"]
    print(f"  image (manifest) digest: {digest}")
    print(f"    -> url oci://REPO@{digest}, or sha256: {digest.split(':', 1)[1]} beside a tag")
    print(f"  plugin.wasm sha256: {summary['wasm_sha256']}")
    print("    -> sha256 of an http(s):// URL serving the .wasm itself")
    print("Push it, e.g.:")
    print(f"  crane push {args.out} REGISTRY/envoy-ratelimit-wasm:{args.tag}")
    print(f"  oras cp --from-oci-layout {args.out}:{args.tag} REGISTRY/envoy-ratelimit-wasm:{args.tag}")
    print(f"  skopeo copy oci:{args.out}:{args.tag} docker://REGISTRY/envoy-ratelimit-wasm:{args.tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
