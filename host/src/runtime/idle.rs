//! Finished instances of `reuse_instances` apps, kept for their app's next request.
//!
//! An idle instance holds a slot of its engine's instance pool, which every app on that
//! compiler tier shares, so idle instances are bounded three ways: per app, across all
//! apps (the least recently used goes first), and in time (a sweeper thread drops those
//! idle longer than the time-to-live). And a fresh instantiation that finds the pool
//! full takes the slot of the least recently used idle instance in that pool rather
//! than answering 503.

use super::invoke::Instance;
use crate::config::{
    DEFAULT_IDLE_INSTANCE_TTL, DEFAULT_MAX_IDLE_INSTANCES, DEFAULT_MAX_INSTANCES, Tiering,
};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// Idle instances kept per app, whatever the global budget: one app's burst should not
/// evict every other app's warm instances.
const MAX_IDLE_PER_APP: usize = 64;
/// The sweeper looks for expired instances at least this often (and more often for a
/// short time-to-live), so an instance outlives its TTL by at most this much.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// How many instances the runtime keeps: `[apps]` in wharf.toml.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Instances alive at once across all apps, busy or idle.
    pub max_instances: u32,
    /// Idle instances kept across all apps.
    pub max_idle: usize,
    /// How long an idle instance is kept.
    pub idle_ttl: Duration,
    /// Which compilers apps go through.
    pub tiering: Tiering,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_instances: DEFAULT_MAX_INSTANCES,
            max_idle: DEFAULT_MAX_IDLE_INSTANCES as usize,
            idle_ttl: DEFAULT_IDLE_INSTANCE_TTL,
            tiering: Tiering::default(),
        }
    }
}

pub struct IdlePool {
    /// Both bounds change in place on reload; an instance is checked against them when
    /// it is put back or swept.
    max_idle: AtomicUsize,
    ttl_nanos: AtomicU64,
    next_app: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Per app (by [`AppIdle`] id), oldest first.
    apps: HashMap<u64, Idlers>,
    total: usize,
}

struct Idlers {
    name: Arc<str>,
    instances: VecDeque<(Instant, Instance)>,
}

/// One app's share of the pool. Dropped with the app (reload, removal), it drops the
/// app's idle instances.
pub struct AppIdle {
    pool: Arc<IdlePool>,
    id: u64,
    name: Arc<str>,
}

impl IdlePool {
    /// A pool with its sweeper thread, which ends when the pool is dropped.
    pub fn start(options: &PoolOptions) -> Arc<Self> {
        let pool = Arc::new(Self {
            max_idle: AtomicUsize::new(0),
            ttl_nanos: AtomicU64::new(0),
            next_app: AtomicU64::new(0),
            inner: Default::default(),
        });
        pool.set_limits(options.max_idle, options.idle_ttl);
        let weak = Arc::downgrade(&pool);
        std::thread::Builder::new()
            .name("wharf-idle".into())
            .spawn(move || sweep_until_dropped(weak))
            .expect("spawn idle sweeper thread");
        pool
    }

    /// Keeps at most `max_idle` idle instances, each for at most `ttl`, from now on.
    pub fn set_limits(&self, max_idle: usize, ttl: Duration) {
        self.max_idle.store(max_idle, Ordering::Relaxed);
        let nanos = u64::try_from(ttl.as_nanos()).unwrap_or(u64::MAX);
        self.ttl_nanos.store(nanos, Ordering::Relaxed);
    }

    fn max_idle(&self) -> usize {
        self.max_idle.load(Ordering::Relaxed)
    }

    fn ttl(&self) -> Duration {
        Duration::from_nanos(self.ttl_nanos.load(Ordering::Relaxed))
    }

    pub fn for_app(self: &Arc<Self>, name: Arc<str>) -> AppIdle {
        AppIdle {
            pool: self.clone(),
            id: self.next_app.fetch_add(1, Ordering::Relaxed),
            name,
        }
    }

    /// Drops the instances idle for longer than the time-to-live, and says so per app.
    fn expire(&self, now: Instant) {
        let mut expired: Vec<(Arc<str>, Vec<Instance>)> = Vec::new();
        let ttl = self.ttl();
        {
            let mut inner = self.inner.lock().unwrap();
            let mut count = 0;
            for idlers in inner.apps.values_mut() {
                let mut dropped = Vec::new();
                while let Some((since, _)) = idlers.instances.front()
                    && now.duration_since(*since) >= ttl
                {
                    dropped.extend(idlers.instances.pop_front().map(|(_, i)| i));
                }
                if !dropped.is_empty() {
                    count += dropped.len();
                    expired.push((idlers.name.clone(), dropped));
                }
            }
            inner.total -= count;
        }
        // Stores are dropped outside the lock: giving memory back takes a while.
        for (app, instances) in expired {
            tracing::info!(app = %app, count = instances.len(), ?ttl, "idle instances expired");
        }
    }
}

impl Inner {
    /// Takes the least recently used idle instance of any app, or of the apps running
    /// on `engine` only: each compiler tier's engine has a pool of its own.
    fn pop_oldest(&mut self, engine: Option<&Engine>) -> Option<Instance> {
        let on_engine = |idlers: &Idlers| match (engine, idlers.instances.front()) {
            (Some(engine), Some((_, instance))) => Engine::same(instance.engine(), engine),
            _ => true,
        };
        let oldest = self
            .apps
            .iter()
            .filter(|(_, idlers)| on_engine(idlers))
            .filter_map(|(id, idlers)| Some((idlers.instances.front()?.0, *id)))
            .min()?
            .1;
        let (_, instance) = self.apps.get_mut(&oldest)?.instances.pop_front()?;
        self.total -= 1;
        Some(instance)
    }
}

impl AppIdle {
    /// Drops the least recently used idle instance of any app on `engine`, freeing its
    /// slot in that engine's pool for this app. False if there was none.
    pub fn evict_one(&self, engine: &Engine) -> bool {
        let evicted = self.pool.inner.lock().unwrap().pop_oldest(Some(engine));
        evicted.is_some()
    }

    /// The app's most recently used idle instance: its memory is the likeliest to be warm.
    pub fn take(&self) -> Option<Instance> {
        let mut inner = self.pool.inner.lock().unwrap();
        let (_, instance) = inner.apps.get_mut(&self.id)?.instances.pop_back()?;
        inner.total -= 1;
        Some(instance)
    }

    /// Keeps `instance` for the app's next request, unless the app has its share
    /// already; at the global budget the least recently used idle instance makes room.
    pub fn put(&self, instance: Instance) {
        let pool = &self.pool;
        let mut inner = pool.inner.lock().unwrap();
        let own = inner.apps.get(&self.id).map_or(0, |i| i.instances.len());
        let max_idle = pool.max_idle();
        if own >= MAX_IDLE_PER_APP.min(max_idle) {
            drop(inner);
            drop(instance);
            return;
        }
        let evicted = if inner.total >= max_idle {
            inner.pop_oldest(None)
        } else {
            None
        };
        inner
            .apps
            .entry(self.id)
            .or_insert_with(|| Idlers {
                name: self.name.clone(),
                instances: VecDeque::new(),
            })
            .instances
            .push_back((Instant::now(), instance));
        inner.total += 1;
        drop(inner);
        drop(evicted);
    }
}

impl Drop for AppIdle {
    fn drop(&mut self) {
        let removed = {
            let mut inner = self.pool.inner.lock().unwrap();
            let removed = inner.apps.remove(&self.id);
            inner.total -= removed.as_ref().map_or(0, |i| i.instances.len());
            removed
        };
        drop(removed);
    }
}

fn sweep_until_dropped(pool: Weak<IdlePool>) {
    while let Some(pool) = pool.upgrade() {
        pool.expire(Instant::now());
        let interval = (pool.ttl() / 2).clamp(Duration::from_millis(10), MAX_SWEEP_INTERVAL);
        drop(pool);
        std::thread::sleep(interval);
    }
}
