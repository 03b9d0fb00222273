//! The per-evaluation store state: WASI with nothing granted, the memory limiter,
//! captured guest output, and the host functions policies may call.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::CallContext;
use super::bindings::Level;
use super::bindings::stsguard::policy::{host, types};
use super::budget::MemoryBudget;

/// Everything one store owns.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    context: CallContext,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
}

impl Sandbox {
    pub fn new(
        context: CallContext,
        memory_bytes: u64,
        budget: Arc<MemoryBudget>,
        output_bytes: usize,
    ) -> Self {
        let stdout = MemoryOutputPipe::new(output_bytes);
        let stderr = MemoryOutputPipe::new(output_bytes);
        // Nothing granted: no preopened directories, no environment, no
        // arguments, no sockets, no name lookups, an empty stdin.
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(memory_bytes, budget),
            context,
            stdout,
            stderr,
        }
    }

    /// Writes what the guest printed to the host log, a line per event.
    pub fn flush_output(&mut self) {
        for (stream, pipe) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let bytes = pipe.contents();
            if bytes.is_empty() {
                continue;
            }
            for line in String::from_utf8_lossy(&bytes).lines() {
                tracing::info!(
                    policy = %self.context.policy,
                    uid = %self.context.uid,
                    stream,
                    "{line}"
                );
            }
        }
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for Sandbox {}

impl host::Host for Sandbox {
    fn log(&mut self, level: Level, message: String) {
        let policy = &*self.context.policy;
        let uid = &*self.context.uid;
        match level {
            Level::Trace => tracing::trace!(policy, uid, "{message}"),
            Level::Debug => tracing::debug!(policy, uid, "{message}"),
            Level::Info => tracing::info!(policy, uid, "{message}"),
            Level::Warn => tracing::warn!(policy, uid, "{message}"),
            Level::Error => tracing::error!(policy, uid, "{message}"),
        }
    }
}

/// Caps a store's linear memory at the policy's limit and within the server's
/// budget, and remembers which was hit, so an out-of-memory trap is reported as
/// such rather than as a generic trap.
pub struct MemoryLimiter {
    limit: u64,
    exceeded: bool,
    budget: Arc<MemoryBudget>,
    /// What this store holds of the budget; given back on drop.
    reserved: u64,
    budget_refused: bool,
}

impl MemoryLimiter {
    fn new(limit: u64, budget: Arc<MemoryBudget>) -> Self {
        Self {
            limit,
            exceeded: false,
            budget,
            reserved: 0,
            budget_refused: false,
        }
    }

    /// Whether the policy's own memory limit stopped it.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Whether the server-wide budget had no room for it.
    pub fn budget_refused(&self) -> bool {
        self.budget_refused
    }
}

impl Drop for MemoryLimiter {
    fn drop(&mut self) {
        self.budget.release(self.reserved);
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limit {
            self.exceeded = true;
            wasmtime::bail!("memory limit of {} bytes exceeded", self.limit);
        }
        let growth = desired.saturating_sub(current) as u64;
        if !self.budget.try_reserve(growth) {
            self.budget_refused = true;
            wasmtime::bail!(
                "the server's memory budget for running policies ({} bytes) is in use",
                self.budget.limit()
            );
        }
        self.reserved += growth;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}
