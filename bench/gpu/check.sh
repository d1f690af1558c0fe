#!/bin/bash
# kumo against a real NVIDIA GPU: NVML discovery in the node status, an MLTask (process
# runtime) training on the GPU with its use sampled through NVML, and runc pods given the GPU
# through a CDI spec and, without one, through the bare device nodes.  Run as root from the repo
# root on the GPU machine, with what prepare.sh gathered:  bash bench/gpu/check.sh .devcheck
set -u
D=$(realpath "${1:-.devcheck}")
W=$(mktemp -d /tmp/kumo-gpu.XXXX)
export HOME=$W/home KUMO=$D/kumo
mkdir -p "$HOME"
k() { "$KUMO" "$@"; }
step() { echo; echo "== $(date +%T) $*"; }
# Waits (up to $3 s) until `kumo get $1 $2` shows one of the phases in $4.
wait_phase() {
  for _ in $(seq 1 $(($3 * 2))); do
    k get $1 $2 --no-headers 2>/dev/null | grep -Eq "$4" && return 0
    sleep 0.5
  done
  echo "TIMEOUT waiting for $1 $2 to be $4"; return 1
}

step facts
uname -r; nvidia-smi -L
nvidia-smi --query-gpu=index,uuid,name,memory.total,driver_version --format=csv
ls -l /dev/nvidia*; ls /etc/cdi /var/run/cdi 2>&1; command -v nvidia-ctk runc
grep cgroup /proc/mounts | head -3; ldconfig -p | grep -E "libnvidia-ml|libcuda.so"
PY=$(command -v python3); echo "python: $PY"

step "CUDA takes a UUID in CUDA_VISIBLE_DEVICES (what kumo gives runc containers)"
UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1)
CUDA_VISIBLE_DEVICES=$UUID "$PY" -c "import torch; print(torch.cuda.device_count(), torch.cuda.get_device_name(0))"

step "runc from the build machine"
command -v runc || install -m 755 "$D/runc" /usr/local/bin/runc
ldconfig -p | grep -q libseccomp.so.2 || { cp "$D/libseccomp.so.2" /usr/local/lib/ && ldconfig; }
runc --version

step "a CDI spec for this machine's GPU (+ the host libc, so busybox can run nvidia-smi)"
"$PY" bench/gpu/cdi_spec.py "$W/cdi/nvidia.json" --host-libc | head -40

step "import the busybox image; kumo up (no pod network: no CNI plugins here)"
k image import "$D/busybox-layout" --name local/busybox:1 --data-dir "$W/data"
"$KUMO" up --data-dir "$W/data" --node-name gpu-node --no-pod-network --cdi-spec-dir "$W/cdi" \
  --heartbeat-interval 2s ${KUMO_UP_EXTRA:-} > "$W/up.log" 2>&1 &
UP=$!
trap 'kill -TERM $UP 2>/dev/null' EXIT
for _ in $(seq 1 120); do k get nodes --no-headers 2>/dev/null | grep -q " Ready" && break; sleep 0.5; done
kill -0 $UP 2>/dev/null || { echo "kumo up failed:"; cat "$W/up.log"; exit 1; }
k get nodes -o wide
k get node gpu-node -o yaml | grep -E -A12 "^  gpus:|^  labels:|^  capacity:"

step "MLTask on the GPU (process runtime), GPU use sampled through NVML"
cat > "$W/train.py" <<'PYEOF'
import os, time, torch
print("env CUDA_VISIBLE_DEVICES=%s NVIDIA_VISIBLE_DEVICES=%s RANK=%s WORLD_SIZE=%s" % tuple(
    os.environ.get(k) for k in ["CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "RANK", "WORLD_SIZE"]), flush=True)
print("device", torch.cuda.get_device_name(0), "count", torch.cuda.device_count(), flush=True)
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
t0, n = time.time(), 0
while time.time() - t0 < 20:
    b = a @ a; n += 1
    if n % 100 == 0: torch.cuda.synchronize()
torch.cuda.synchronize(); dt = time.time() - t0
print(f"{n} bf16 8192^3 matmuls in {dt:.1f} s = {n * 2 * 8192**3 / dt / 1e12:.0f} TFLOP/s", flush=True)
PYEOF
MODEL=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | sed -E 's/[^A-Za-z0-9._-]+/-/g')
k submit torch1 --runtime process --max-retries 0 --gpus 1 --gpu-model "$MODEL" -- "$PY" "$W/train.py"
wait_phase mltask torch1 60 "Running"
for _ in $(seq 1 30); do
  k describe mltask torch1 | grep -E "[1-9][0-9]*%" && break; sleep 1
done
k get mltasks -o wide
wait_phase mltask torch1 120 "Succeeded|Failed"
k describe mltask torch1; k logs mltask/torch1

step "runc pod given the GPU through the CDI spec: nvidia-smi inside the container"
cat > "$W/pod.yaml" <<'YEOF'
apiVersion: v1
kind: Pod
metadata: {name: NAME}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: local/busybox:1
    command: [/bin/busybox, sh, -c, 'echo NVIDIA=$NVIDIA_VISIBLE_DEVICES CUDA=$CUDA_VISIBLE_DEVICES; ls -l /dev/ | grep nvidia; ls /usr/lib/nvidia 2>&1; /usr/bin/nvidia-smi -L && /usr/bin/nvidia-smi --query-gpu=index,uuid,name,memory.total,memory.used --format=csv; echo opened: $(head -c 0 /dev/nvidiactl && echo nvidiactl)']
    resources: {limits: {nvidia.com/gpu: 1}}
YEOF
sed s/NAME/cdi/ "$W/pod.yaml" | k apply -f -
wait_phase pod cdi 60 "Completed|Succeeded|Failed|Error"
k get pod cdi; k logs cdi; k get pod cdi -o yaml | grep -A8 "terminated:"
k describe pod cdi | grep -E "Allocated|gpu-devices"

step "runc pod without a CDI spec: the bare device nodes (driver libraries are the image's business)"
rm "$W/cdi/nvidia.json"
sed s/NAME/bare/ "$W/pod.yaml" | k apply -f -
wait_phase pod bare 60 "Completed|Succeeded|Failed|Error"
k get pod bare; k logs bare; k get pod bare -o yaml | grep -A8 "terminated:"

step "delete the pods and the task; stop kumo; what is left"
k delete pod cdi bare; k delete mltask torch1
pod_cgroups() { find /sys/fs/cgroup/kumo /sys/fs/cgroup/*/kumo -mindepth 1 -maxdepth 1 -type d 2>/dev/null; }
for _ in $(seq 1 40); do [ -z "$(pod_cgroups)" ] && break; sleep 0.5; done
kill -TERM $UP; wait $UP; echo "kumo up exited $?"
tail -5 "$W/up.log"
echo "kumo mounts: $(grep -c kumo /proc/mounts)"; echo "pod cgroups left: $(pod_cgroups | wc -l)"; ps -eo pid,ppid,stat,args | grep -E "kumo|runc" | grep -v grep | head
cp "$W/up.log" "${OUT:-/tmp}/up.log" 2>/dev/null
echo "== done"
