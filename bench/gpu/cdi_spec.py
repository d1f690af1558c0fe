#!/usr/bin/env python3
"""Writes a CDI spec of kind nvidia.com/gpu for this host's GPUs, in the shape
`nvidia-ctk cdi generate` gives (devices by index and UUID; the control nodes, nvidia-smi and
the driver's libraries for every GPU container), for a machine without the NVIDIA Container
Toolkit.  With --host-libc it also mounts the host's C library, so that a busybox image can run
the mounted nvidia-smi (a test aid, not something a real spec does).
Usage: cdi_spec.py OUT.yaml [--host-libc]"""
import glob, json, os, shutil, subprocess, sys

out, host_libc = sys.argv[1], "--host-libc" in sys.argv
query = subprocess.run(["nvidia-smi", "--query-gpu=index,uuid", "--format=csv,noheader"],
                       capture_output=True, text=True, check=True).stdout
devices = []
for line in query.strip().splitlines():
    index, uuid = [f.strip() for f in line.split(",")]
    edits = {"deviceNodes": [{"path": f"/dev/nvidia{index}"}]}
    devices += [{"name": index, "containerEdits": edits}, {"name": uuid, "containerEdits": edits}]

def real(lib):
    """The file ldconfig knows for `lib`, resolved."""
    for line in subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout.splitlines():
        if line.strip().startswith(lib + " ") and "x86-64" in line:
            return os.path.realpath(line.split("=>")[1].strip())
    return None

mounts, ro = [], ["ro", "nosuid", "nodev", "bind"]
for lib in ["libnvidia-ml.so.1", "libcuda.so.1", "libnvidia-ptxjitcompiler.so.1"]:
    path = real(lib)
    if path:
        # The library under its own name and under the soname programs open.
        mounts.append({"hostPath": path, "containerPath": "/usr/lib/nvidia/" + lib, "options": ro})
smi = shutil.which("nvidia-smi")
if smi:
    mounts.append({"hostPath": os.path.realpath(smi), "containerPath": "/usr/bin/nvidia-smi", "options": ro})
env = ["NVIDIA_VISIBLE_DEVICES=void", "LD_LIBRARY_PATH=/usr/lib/nvidia"]
if host_libc:
    for lib in ["libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1"]:
        path = real(lib)
        if path:
            mounts.append({"hostPath": path, "containerPath": "/usr/lib/nvidia/" + lib, "options": ro})
    loader = os.path.realpath("/lib64/ld-linux-x86-64.so.2")
    mounts.append({"hostPath": loader, "containerPath": "/lib64/ld-linux-x86-64.so.2", "options": ro})
nodes = [{"path": p} for p in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools",
                              "/dev/nvidia-modeset"] if os.path.exists(p)]
spec = {"cdiVersion": "0.6.0", "kind": "nvidia.com/gpu", "devices": devices,
        "containerEdits": {"env": env, "deviceNodes": nodes, "mounts": mounts}}
os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
with open(out, "w") as f:
    json.dump(spec, f, indent=1)  # JSON is YAML too
print(json.dumps(spec, indent=1))
