#!/usr/bin/env python3
"""Writes an OCI image layout holding /bin/busybox (and /bin/sh), for `kumo image import`
on a machine that reaches no registry.  Usage: busybox_layout.py BUSYBOX OUT_DIR TAG"""
import gzip, hashlib, io, json, os, sys, tarfile

busybox, out, tag = sys.argv[1], sys.argv[2], sys.argv[3]
raw = io.BytesIO()
with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
    for d in ["bin", "tmp", "etc"]:
        info = tarfile.TarInfo(d)
        info.type, info.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(info)
    tar.add(busybox, arcname="bin/busybox")
    link = tarfile.TarInfo("bin/sh")
    link.type, link.linkname = tarfile.SYMTYPE, "busybox"
    tar.addfile(link)
layer = raw.getvalue()
gz = gzip.compress(layer, mtime=0)
os.makedirs(f"{out}/blobs/sha256", exist_ok=True)

def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{digest}", "wb") as f:
        f.write(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}

config = json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
}).encode()
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(gz)}],
}).encode()
index = {"schemaVersion": 2, "manifests": [{
    "mediaType": "application/vnd.oci.image.manifest.v1+json", **blob(manifest),
    "annotations": {"org.opencontainers.image.ref.name": tag}}]}
with open(f"{out}/index.json", "w") as f:
    json.dump(index, f)
with open(f"{out}/oci-layout", "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
