//! The one `Engine` of the process and the thread that ticks its epoch.

use std::time::Duration;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances. A running guest checks its deadline (and yields to
/// the executor) once per tick, so this bounds both the timeout overshoot and how long
/// a spinning guest can hold a worker thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Instances alive at once across all apps. Past it a request gets 503 instead of
/// the process growing without bound.
pub const MAX_CONCURRENT_INSTANCES: u32 = 1000;

/// Builds the engine: pooling allocator with copy-on-write memory images, epoch
/// interruption, and a per-slot memory size large enough for any manifest's limit
/// (the per-app limit itself is enforced by the store's limiter).
pub fn build() -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(MAX_CONCURRENT_INSTANCES)
        .total_core_instances(MAX_CONCURRENT_INSTANCES * 4)
        .total_memories(MAX_CONCURRENT_INSTANCES)
        .total_tables(MAX_CONCURRENT_INSTANCES * 4)
        .total_stacks(MAX_CONCURRENT_INSTANCES)
        // Components from other toolchains link several core modules together.
        .max_core_instances_per_component(64)
        .max_memories_per_component(super::limits::MAX_MEMORIES as u32)
        .max_tables_per_component(32)
        .max_component_instance_size(1 << 20)
        .max_memory_size((super::manifest::MAX_MEMORY_MB << 20) as usize)
        // Keep the first pages of each slot mapped so the next instance in the slot
        // skips a page fault storm; small apps then reuse warm memory.
        .linear_memory_keep_resident(1 << 20)
        .table_keep_resident(1 << 16);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true);
    Ok(Engine::new(&config)?)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on a dedicated thread, so the tick
/// keeps coming even while every runtime worker is busy inside a guest.
pub fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("wharf-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch thread");
}
