//! What the runtime needs to know of GPUs: how many whole GPUs a container asks for, the
//! variables naming its devices, and the node's devices (found by the agent) to make nodes of.

use kumo_api::node::GpuDevice;
use kumo_api::pod::Container;
use kumo_api::GPU_RESOURCE;

/// The variables naming a GPU container's devices, set last in its environment.
pub const CUDA_VISIBLE_DEVICES: &str = "CUDA_VISIBLE_DEVICES";
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// Whole GPUs `c` asks for (0 when none).
pub fn gpus_wanted(c: &Container) -> usize {
    c.resources
        .request(GPU_RESOURCE)
        .map_or(0, |q| (q.millis() / 1000).max(0) as usize)
}

/// The node's GPU devices; the agent's discovery (NVML, or made-up devices) implements it.
pub trait GpuDevices: Send + Sync {
    fn discover(&self) -> Vec<GpuDevice>;
}
