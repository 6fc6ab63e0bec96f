//! The optimiser: a thread that compiles the apps serving from the baseline tier again
//! with the optimising compiler, one at a time and at a lower priority than serving,
//! and swaps each optimised version in like a reload: requests in flight finish on the
//! baseline code, new ones get the optimised code.

use super::Runtime;
use super::app::{App, AppSource};
use std::sync::{Arc, Weak, mpsc};
use std::time::Instant;

/// How much lower than serving the optimiser's threads run (Linux niceness, per
/// thread). Not idle priority: under sustained load the optimised build must still
/// arrive, and it is what makes the load cheaper.
const NICENESS: i32 = 10;

/// An app version that serves from the baseline tier. Its files are read again when
/// its turn comes, so a queue of versions holds no component bytes.
pub(super) struct Job {
    name: Arc<str>,
    fingerprint: [u8; 32],
    /// When the baseline version began serving.
    since: Instant,
}

impl Job {
    pub fn new(app: &App) -> Self {
        Self {
            name: app.name.clone(),
            fingerprint: app.fingerprint,
            since: Instant::now(),
        }
    }
}

/// Starts the optimiser of `runtime`; it ends once the runtime is dropped.
pub(super) fn start(runtime: Weak<Runtime>) -> mpsc::Sender<Job> {
    let (sender, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("wharf-optimise".into())
        .spawn(move || {
            lower_priority();
            // Cranelift compiles a component's functions in parallel on the rayon pool it
            // is called from: this one, whose threads run at the optimiser's priority.
            let pool = rayon::ThreadPoolBuilder::new()
                .thread_name(|i| format!("wharf-optimise-{i}"))
                .start_handler(|_| lower_priority())
                .build();
            let pool = match pool {
                Ok(pool) => pool,
                Err(e) => {
                    tracing::error!("apps stay on the baseline tier: no optimiser threads: {e}");
                    return;
                }
            };
            while let Ok(job) = jobs.recv() {
                let Some(runtime) = runtime.upgrade() else {
                    break;
                };
                pool.install(|| runtime.optimise(job));
            }
        })
        .expect("spawn optimiser thread");
    sender
}

fn lower_priority() {
    if let Err(e) = rustix::process::setpriority_process(None, NICENESS) {
        tracing::warn!("the optimiser runs at the priority of serving: {e}");
    }
}

impl Runtime {
    /// Compiles `job`'s app with the optimising tier and swaps it in, unless the app
    /// changed meanwhile (the new version has a job of its own).
    fn optimise(&self, job: Job) {
        let current = || {
            self.registry()
                .get(&job.name)
                .filter(|app| app.fingerprint == job.fingerprint && self.tiers.moves_on(app.tier))
                .cloned()
        };
        if current().is_none() {
            return;
        }
        // Files that no longer match the serving version are a newer one on its way.
        let source = match AppSource::read(self.apps_dir(), &job.name) {
            Ok(source) if source.fingerprint == job.fingerprint => source,
            _ => return,
        };
        let started = Instant::now();
        let Some(compiled) = self.tiers.optimise(&source.wasm, &source.digest) else {
            return;
        };
        let compile_ms = started.elapsed().as_millis() as u64;
        let _writer = self.reloading.blocking_lock();
        let Some(app) = current() else { return };
        let swapped = compiled
            .and_then(|compiled| app.retiered(&compiled, self.idle.for_app(app.name.clone())))
            .and_then(|optimised| self.registry().with(Arc::new(optimised)));
        match swapped {
            Ok(registry) => {
                self.publish(registry);
                tracing::info!(
                    app = %app.name,
                    compile_ms,
                    after_baseline_ms = job.since.elapsed().as_millis() as u64,
                    "app optimised: the optimised build serves"
                );
            }
            Err(e) => tracing::warn!(
                app = %app.name,
                file = %app.file.display(),
                "optimised build failed, the baseline build keeps serving: {e:#}"
            ),
        }
    }
}
