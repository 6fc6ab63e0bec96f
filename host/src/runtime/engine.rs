//! The engines of the process (one per compiler tier) and the thread that ticks their
//! epochs.

use super::tier::TierKind;
use std::time::Duration;
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy,
};

/// How often the epoch advances. A running guest checks its deadline (and yields to
/// the executor) once per tick, so this bounds both the timeout overshoot and how long
/// a spinning guest can hold a worker thread.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Dirty linear-memory bytes reset in place (not returned to the kernel) per instance.
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// Table bytes reset in place per instance.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Builds the engine of one compiler tier: pooling allocator for `max_instances`
/// instances alive at once across the apps it runs (past it a request gets 503 instead
/// of the process growing without bound), copy-on-write memory images, epoch
/// interruption, and a per-slot memory size large enough for any manifest's limit (the
/// per-app limit itself is enforced by the store's limiter). Both tiers get the same
/// sandbox: only the compiler differs.
pub fn build(tier: TierKind, max_instances: u32) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 4)
        .total_memories(max_instances)
        .total_tables(max_instances * 4)
        .total_stacks(max_instances)
        // Components from other toolchains link several core modules together.
        .max_core_instances_per_component(64)
        .max_memories_per_component(super::limits::MAX_MEMORIES as u32)
        .max_tables_per_component(32)
        .max_component_instance_size(1 << 20)
        .max_memory_size((super::manifest::MAX_MEMORY_MB << 20) as usize)
        // A finished instance's memory is reset for the next one. By default wasmtime
        // gives the pages back (madvise) and the next request page-faults them in again,
        // which costs more than the request itself. With PAGEMAP_SCAN (Linux 6.7+) only
        // the pages the guest dirtied are found and reset in place, up to these sizes.
        .pagemap_scan(Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE);

    let mut config = Config::new();
    config
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        .epoch_interruption(true)
        .memory_init_cow(true)
        .parallel_compilation(true)
        .strategy(match tier {
            TierKind::Baseline => Strategy::Winch,
            TierKind::Optimised => Strategy::Cranelift,
        });
    Ok(Engine::new(&config)?)
}

/// Advances the engines' epochs every [`EPOCH_TICK`] on a dedicated thread, so the tick
/// keeps coming even while every runtime worker is busy inside a guest. Ends once the
/// engines are gone.
pub fn start_epoch_ticker(engines: &[&Engine]) {
    let weak: Vec<_> = engines.iter().map(|engine| engine.weak()).collect();
    std::thread::Builder::new()
        .name("wharf-epoch".into())
        .spawn(move || {
            loop {
                let mut alive = false;
                for engine in weak.iter().filter_map(|weak| weak.upgrade()) {
                    engine.increment_epoch();
                    alive = true;
                }
                if !alive {
                    break;
                }
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn epoch thread");
}
