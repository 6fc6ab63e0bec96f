//! Per-instance resource limits.
//!
//! wasmtime checks a memory limit per linear memory; a component with several core
//! modules could hold several memories, so the cap here is on their sum.

use wasmtime::ResourceLimiter;

/// Linear memories one instance may create.
pub const MAX_MEMORIES: usize = 4;
/// Tables one instance may create.
const MAX_TABLES: usize = 32;
/// Core instances one component instance may create.
const MAX_INSTANCES: usize = 64;
/// Elements one table may hold.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

pub struct InstanceLimits {
    max_memory: usize,
    used_memory: usize,
    /// Whether a growth was refused: a trap after it is the guest out of memory.
    refused: bool,
}

impl InstanceLimits {
    pub fn new(max_memory: usize) -> Self {
        Self {
            max_memory,
            used_memory: 0,
            refused: false,
        }
    }

    pub fn refused_memory(&self) -> bool {
        self.refused
    }

    /// A reused instance starts its next request with a clean record.
    pub fn forget_refusal(&mut self) {
        self.refused = false;
    }
}

impl ResourceLimiter for InstanceLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let total = self.used_memory - current + desired;
        if total > self.max_memory {
            // Refused growth makes `memory.grow` return -1; the guest's allocator then
            // fails and the guest traps, which the gateway answers with 500.
            self.refused = true;
            return Ok(false);
        }
        self.used_memory = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
