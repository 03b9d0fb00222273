//! The WebAssembly engine: compiles policy components once and runs each
//! evaluation in a fresh, sandboxed instance.
//!
//! ```text
//!   component bytes ──compile (or on-disk cache)──► Component
//!        ──link WASI (nothing granted) + host.log──► PolicyPre   (once per policy)
//!   per evaluation: new Store(limits, epoch deadline) ─► instantiate ─► evaluate ─► drop
//! ```
//!
//! Why a fresh instance per evaluation: a policy cannot keep state between
//! reviews, one review cannot see another's data, and a policy that leaks memory
//! cannot grow the server over time. What makes that affordable is the pooling
//! allocator with copy-on-write memory images and `linear_memory_keep_resident`
//! (measured: ~100 µs per fresh instance + evaluation, and it
//! scales across cores), plus compiling each component once into a `PolicyPre`.
//!
//! Sandbox limits per evaluation: a wall-clock deadline by epoch interruption (a
//! ticker thread advances the epoch every [`TICK`]), a linear-memory cap enforced
//! by a [`ResourceLimiter`](wasmtime::ResourceLimiter), WASI with no files,
//! sockets, environment or arguments. Guest stdout and stderr are captured and
//! written to the host log. A policy that traps, loops or exhausts its memory fails
//! only its own evaluation; the engine and the `PolicyPre` stay usable.

pub mod anatomy;
mod bindings;
mod budget;
mod reads;
mod sandbox;
mod seed;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use stsguard_contract::cluster::ResourceKind;
use stsguard_contract::{Target, Verdict};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

pub use budget::MemoryBudget;
pub use reads::{ClusterAccess, ClusterReader};
pub use sandbox::LogQuota;
use sandbox::Sandbox;

/// How often the epoch advances; deadlines are rounded up to whole ticks.
pub const TICK: Duration = Duration::from_millis(5);

/// The largest `memoryLimit` a policy may have: the size of a pooling slot.
pub const MAX_MEMORY_LIMIT: u64 = 512 << 20;

/// The default total of linear memory all running policies may hold at once.
pub const DEFAULT_GUEST_MEMORY_BUDGET: u64 = 256 << 20;

/// How the engine is set up.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where compiled components are cached (keyed by the component's digest,
    /// the engine's settings and the wasmtime version). `None` compiles every
    /// time.
    pub cache_dir: Option<PathBuf>,
    /// Instances that may exist at once (pooling slots).
    pub max_instances: u32,
    /// Write `/tmp/perf-<pid>.map` so `perf` can name the functions of policies.
    pub perf_map: bool,
    /// Linear memory all running instances may hold together, in bytes (see
    /// [`MemoryBudget`]).
    pub guest_memory_budget: u64,
    /// A compilation cache filled elsewhere (the container image's, made by
    /// `stsguard compile` when the image was built): what `cache_dir` lacks is
    /// copied from it before the engine starts, so a new pod does not compile.
    pub cache_seed: Option<PathBuf>,
    /// Compile for the host's architecture without its optional CPU features
    /// (AVX, BMI, ...), so that compiled code, and the cache keyed by it, is the
    /// same on every machine of that architecture: a cache compiled when the
    /// image is built is then valid on every node. Measured: the full chain
    /// 219 → 282 µs on one thread, 140 → 161 µs per review on two (docs/performance.md).
    pub portable: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
        Self {
            cache_dir: None,
            max_instances: (cores * 4).max(16),
            perf_map: std::env::var_os("STSGUARD_PERF_MAP").is_some(),
            guest_memory_budget: DEFAULT_GUEST_MEMORY_BUDGET,
            cache_seed: None,
            portable: false,
        }
    }
}

/// What a policy says about itself (WIT `metadata`), read once at load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub name: String,
    pub version: String,
    pub description: String,
    /// Whether the policy may return a mutation.
    pub mutating: bool,
    /// The kinds it evaluates.
    pub targets: Vec<Target>,
    /// JSON Schema of its settings, as JSON text.
    pub settings_schema: String,
    /// The kinds of cluster objects it reads (contract 0.3; none before).
    pub reads: Vec<ResourceKind>,
}

/// Why the engine could not be created.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("could not use the compilation cache directory {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("could not create the WebAssembly engine: {0}")]
    Create(String),
}

/// Why a component could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file is not a policy component of this contract (read before
    /// compiling; see [`anatomy`]).
    #[error("not a stsguard policy: {0}")]
    NotAPolicy(String),
    #[error("not a valid WebAssembly policy component: {0}")]
    Compile(String),
    #[error(
        "the component does not fit the {wit} world; rebuild it against policies/wit of this \
         stsguard version: {0}",
        wit = stsguard_contract::WIT_PACKAGE
    )]
    Link(String),
    #[error("the component's `metadata` export failed: {0}")]
    Metadata(String),
}

/// Why one evaluation (or a settings check) did not produce a result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// Shown to the millisecond: `timed out after 1s 44ms`.
    #[error("timed out after {}", humantime::format_duration(std::time::Duration::from_millis(.0.as_millis() as u64)))]
    Timeout(Duration),
    #[error("exceeded its memory limit of {0} bytes")]
    MemoryLimit(u64),
    #[error(
        "found no memory: the {0} bytes the server allows all running policies together \
         were in use (raise --guest-memory-budget, or lower concurrent evaluations)"
    )]
    MemoryBudget(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("returned an error: {0}")]
    Policy(String),
}

impl EvalError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::MemoryLimit(_) => "memory_limit",
            Self::MemoryBudget(_) => "memory_budget",
            Self::Trap(_) => "trap",
            Self::Policy(_) => "policy_error",
        }
    }
}

/// A verdict the contract refuses (a mutation of the object's identity, a bad
/// pointer, a mutation from a non-mutating policy) fails the evaluation like an
/// error the policy returned.
impl From<stsguard_contract::VerdictError> for EvalError {
    fn from(error: stsguard_contract::VerdictError) -> Self {
        Self::Policy(error.to_string())
    }
}

/// Limits for one call into a policy.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: u64,
}

/// What one call runs with: what its log lines are tagged with, and what it
/// may read of the cluster.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    pub policy: Arc<str>,
    pub uid: Arc<str>,
    /// `None`: every cluster read fails as not synced (a 0.2 policy never reads).
    pub cluster: Option<ClusterAccess>,
}

/// The shared engine: cheap to clone.
#[derive(Clone)]
pub struct Engine {
    engine: wasmtime::Engine,
    linker: Arc<Linker<Sandbox>>,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

impl Engine {
    /// Creates the engine and starts its epoch ticker. Falls back from the pooling
    /// allocator to on-demand allocation when the pool's virtual-memory
    /// reservation is refused (e.g. under `ulimit -v`).
    pub fn new(options: &EngineOptions) -> Result<Self, EngineError> {
        let engine = match wasmtime::Engine::new(&Self::config(options, true)?) {
            Ok(engine) => engine,
            Err(error) => {
                tracing::warn!(
                    error = %error.root_cause(),
                    "the pooling allocator is not available; using on-demand allocation \
                     (slower per evaluation)"
                );
                wasmtime::Engine::new(&Self::config(options, false)?)
                    .map_err(|e| EngineError::Create(format!("{e:?}")))?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| EngineError::Create(format!("linking WASI: {e:?}")))?;
        bindings::add_to_linker(&mut linker)
            .map_err(|e| EngineError::Create(format!("linking the host interface: {e:?}")))?;
        start_epoch_ticker(&engine);
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            budget: Arc::new(MemoryBudget::new(options.guest_memory_budget)),
        })
    }

    fn config(options: &EngineOptions, pooling: bool) -> Result<Config, EngineError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        // One thread compiles: the memory Cranelift frees is then reused and
        // returned by that thread. Compiling on the rayon pool left it with idle
        // threads holding freed memory (cold start 3.4 s / 104 MiB under load;
        // sequential 4.3 s / 80 MiB). Only a cold cache compiles at all.
        config.parallel_compilation(false);
        if options.portable {
            // An explicit target turns off the detection of the host's CPU features.
            config
                .target(&target_lexicon::HOST.to_string())
                .map_err(|e| EngineError::Create(format!("{e:?}")))?;
        }
        if options.perf_map {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        if pooling {
            let slots = options.max_instances;
            let mut pool = PoolingAllocationConfig::default();
            // A Rust wasm32-wasip2 component instantiates a handful of core
            // modules (the program plus adapter shims), each with a table and at
            // most one memory.
            pool.total_component_instances(slots)
                .total_core_instances(slots * 8)
                .total_memories(slots * 2)
                .total_tables(slots * 8)
                .max_memories_per_component(4)
                .max_tables_per_component(16)
                .max_memory_size(MAX_MEMORY_LIMIT as usize)
                // Keeping a guest's initial pages resident between instances is
                // what makes a fresh instance per request cheap (see module docs).
                .linear_memory_keep_resident(16 << 20)
                .table_keep_resident(64 << 10)
                // Reset only the pages an instance wrote (Linux ≥ 6.7), not the
                // whole memory up to `keep_resident`.
                .pagemap_scan(wasmtime::Enabled::Auto);
            config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        if let Some(dir) = &options.cache_dir {
            let error = |message: String| EngineError::Cache {
                path: dir.clone(),
                message,
            };
            std::fs::create_dir_all(dir).map_err(|e| error(e.to_string()))?;
            if let Some(seed) = &options.cache_seed {
                seed::fill(seed, dir);
            }
            let mut cache_config = wasmtime::CacheConfig::new();
            cache_config.with_directory(dir);
            let cache = wasmtime::Cache::new(cache_config).map_err(|e| error(format!("{e:?}")))?;
            config.cache(Some(cache));
        }
        Ok(config)
    }

    /// Bytes of linear memory running instances hold now (see [`MemoryBudget`]).
    pub fn guest_memory_in_use(&self) -> u64 {
        self.budget.used()
    }

    /// Compiles a component (or loads it from the cache), links it, and reads its
    /// metadata. Slow on a cache miss (seconds): call it off the request path.
    pub fn load(&self, bytes: &[u8]) -> Result<Module, LoadError> {
        let anatomy = anatomy::Anatomy::read(bytes).map_err(LoadError::NotAPolicy)?;
        anatomy.expect_policy().map_err(LoadError::NotAPolicy)?;
        let component =
            Component::new(&self.engine, bytes).map_err(|e| LoadError::Compile(root(&e)))?;
        // The whole chain: its outer parts name the import the host lacks
        // ("component imports instance `wasi:http/types@0.2.3`, but ..."),
        // the innermost only what about it ("resource implementation is missing").
        let pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let pre = bindings::Pre::new(pre, anatomy.contract_version())
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let limits = Limits {
            timeout: Duration::from_secs(5),
            memory_bytes: 64 << 20,
        };
        let metadata = call(
            self,
            &pre,
            &limits,
            &CallContext::default(),
            |policy, store| policy.metadata(store).map(Ok),
        )
        .map_err(|e| LoadError::Metadata(e.to_string()))?;
        Ok(Module {
            engine: self.clone(),
            pre,
            metadata,
        })
    }
}

/// A compiled, linked policy component, ready to instantiate.
pub struct Module {
    engine: Engine,
    pre: bindings::Pre,
    metadata: Metadata,
}

impl std::fmt::Debug for Module {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Module")
            .field("name", &self.metadata.name)
            .finish_non_exhaustive()
    }
}

impl Module {
    /// What the policy said about itself at load.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The contract version the component was built against: `0.3.0`.
    pub fn contract_version(&self) -> &'static str {
        self.pre.version()
    }

    /// Asks the policy whether `settings` (JSON) are valid.
    pub fn validate_settings(
        &self,
        settings: &str,
        limits: &Limits,
        context: &CallContext,
    ) -> Result<(), EvalError> {
        self.call(limits, context, |policy, store| {
            policy.validate_settings(store, settings)
        })
    }

    /// Evaluates one admission request in a fresh instance: `request` is the
    /// AdmissionRequest JSON without its `object`, which is `object` (JSON).
    pub fn evaluate(
        &self,
        request: &str,
        object: &str,
        settings: &str,
        limits: &Limits,
        context: &CallContext,
    ) -> Result<Verdict, EvalError> {
        self.call(limits, context, |policy, store| {
            policy.evaluate(store, request, object, settings)
        })
    }

    fn call<R>(
        &self,
        limits: &Limits,
        context: &CallContext,
        f: impl FnOnce(&bindings::Instance, &mut Store<Sandbox>) -> wasmtime::Result<Result<R, String>>,
    ) -> Result<R, EvalError> {
        call(&self.engine, &self.pre, limits, context, f)
    }
}

/// Runs `f` against a fresh instance of `pre` in a fresh store with `limits`, and
/// turns every way it can fail into an [`EvalError`].
fn call<R>(
    engine: &Engine,
    pre: &bindings::Pre,
    limits: &Limits,
    context: &CallContext,
    f: impl FnOnce(&bindings::Instance, &mut Store<Sandbox>) -> wasmtime::Result<Result<R, String>>,
) -> Result<R, EvalError> {
    let sandbox = Sandbox::new(
        context.clone(),
        limits.memory_bytes,
        engine.budget.clone(),
        LogQuota::PER_EVALUATION,
    );
    let mut store = Store::new(&engine.engine, sandbox);
    store.limiter(|sandbox| &mut sandbox.limiter);
    // The next tick may come at once, so one more tick than the timeout holds
    // guarantees the policy gets at least its full time.
    let ticks = limits.timeout.as_nanos().div_ceil(TICK.as_nanos()) as u64 + 1;
    store.set_epoch_deadline(ticks);
    let started = Instant::now();
    let outcome = pre
        .instantiate(&mut store)
        .and_then(|policy| f(&policy, &mut store));
    store.data_mut().flush_output();
    match outcome {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(message)) => Err(EvalError::Policy(message)),
        Err(error) => {
            if store.data().limiter.exceeded() {
                return Err(EvalError::MemoryLimit(limits.memory_bytes));
            }
            if store.data().limiter.budget_refused() {
                return Err(EvalError::MemoryBudget(engine.budget.limit()));
            }
            if error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
                return Err(EvalError::Timeout(started.elapsed().max(limits.timeout)));
            }
            Err(EvalError::Trap(root(&error)))
        }
    }
}

/// A digest as it is shown (logs, `inspect`, audit reports): lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The innermost cause: wasmtime's outer message is only "error while executing".
fn root(error: &wasmtime::Error) -> String {
    error.root_cause().to_string()
}

/// Advances the engine's epoch every [`TICK`] until the engine is dropped.
fn start_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("stsguard-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}
