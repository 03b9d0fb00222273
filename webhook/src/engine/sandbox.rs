//! The per-evaluation store state: WASI with nothing granted, the memory limiter,
//! captured guest output, and the host functions policies may call.
//!
//! What a guest writes to the log (through `host.log` or stdout/stderr) is capped
//! per evaluation by a [`LogQuota`]: a policy that logs in a loop until its
//! deadline would otherwise flood the log pipeline, and slow every review with it.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::CallContext;
use super::bindings::v0_3::stsguard::policy::types::Level;
use super::bindings::{v0_2, v0_3};
use super::budget::MemoryBudget;

/// Everything one store owns.
pub struct Sandbox {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limiter: MemoryLimiter,
    context: CallContext,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    /// What is left of the guest's log allowance, and what it was given.
    log_quota: LogQuota,
    log_allowance: LogQuota,
}

impl Sandbox {
    pub fn new(
        context: CallContext,
        memory_bytes: u64,
        budget: Arc<MemoryBudget>,
        log_quota: LogQuota,
    ) -> Self {
        let output_bytes = log_quota.bytes;
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
            log_quota,
            log_allowance: log_quota,
        }
    }

    /// What this call runs with.
    pub fn context(&self) -> &CallContext {
        &self.context
    }

    /// The guest's memory limit, in bytes.
    pub fn memory_limit(&self) -> u64 {
        self.limiter.limit
    }

    /// Logs one line of the guest's, if its quota has room.
    fn log_line(&mut self, level: Level, line: &str, stream: Option<&str>) {
        let policy = &*self.context.policy;
        let uid = &*self.context.uid;
        let line = match self.log_quota.admit(line) {
            Admitted::Line(line) => line,
            Admitted::QuotaJustUsedUp => {
                let LogQuota { lines, bytes, .. } = self.log_allowance;
                tracing::warn!(
                    policy,
                    uid,
                    "the policy logged more than {lines} lines or {bytes} bytes in one \
                     evaluation; the rest of its output is dropped"
                );
                return;
            }
            Admitted::Dropped => return,
        };
        let stream = stream.unwrap_or("log");
        match level {
            Level::Trace => tracing::trace!(policy, uid, stream, "{line}"),
            Level::Debug => tracing::debug!(policy, uid, stream, "{line}"),
            Level::Info => tracing::info!(policy, uid, stream, "{line}"),
            Level::Warn => tracing::warn!(policy, uid, stream, "{line}"),
            Level::Error => tracing::error!(policy, uid, stream, "{line}"),
        }
    }

    /// Writes what the guest printed to the host log, a line per event.
    pub fn flush_output(&mut self) {
        let printed = [
            ("stdout", self.stdout.contents()),
            ("stderr", self.stderr.contents()),
        ];
        for (stream, bytes) in printed {
            for line in String::from_utf8_lossy(&bytes).lines() {
                self.log_line(Level::Info, line, Some(stream));
            }
        }
    }
}

/// What is left of one evaluation's log allowance.
#[derive(Debug, Clone, Copy)]
pub struct LogQuota {
    pub lines: usize,
    pub bytes: usize,
    used_up: bool,
}

/// What [`LogQuota::admit`] lets through.
#[derive(Debug, PartialEq, Eq)]
enum Admitted<'a> {
    /// The line, cut short if it did not fit whole.
    Line(&'a str),
    /// Nothing: this is the first line over the quota (say so once).
    QuotaJustUsedUp,
    /// Nothing, and that has already been said.
    Dropped,
}

impl LogQuota {
    /// Plenty for a policy that explains itself; nothing a loop can flood a log with.
    pub const PER_EVALUATION: Self = Self {
        lines: 100,
        bytes: 16 << 10,
        used_up: false,
    };

    fn admit<'a>(&mut self, line: &'a str) -> Admitted<'a> {
        if self.lines == 0 || self.bytes == 0 {
            return if std::mem::replace(&mut self.used_up, true) {
                Admitted::Dropped
            } else {
                Admitted::QuotaJustUsedUp
            };
        }
        let line = &line[..line.floor_char_boundary(self.bytes)];
        self.lines -= 1;
        // Even an empty line costs a byte: a log event has a cost of its own.
        self.bytes = self.bytes.saturating_sub(line.len().max(1));
        Admitted::Line(line)
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

impl v0_3::stsguard::policy::types::Host for Sandbox {}

impl v0_3::stsguard::policy::host::Host for Sandbox {
    fn log(&mut self, level: Level, message: String) {
        self.log_line(level, &message, None);
    }
}

impl v0_2::stsguard::policy::types::Host for Sandbox {}

impl v0_2::stsguard::policy::host::Host for Sandbox {
    fn log(&mut self, level: v0_2::stsguard::policy::types::Level, message: String) {
        use v0_2::stsguard::policy::types::Level as Old;
        let level = match level {
            Old::Trace => Level::Trace,
            Old::Debug => Level::Debug,
            Old::Info => Level::Info,
            Old::Warn => Level::Warn,
            Old::Error => Level::Error,
        };
        self.log_line(level, &message, None);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_quota_cuts_lines_then_says_so_once() {
        let mut quota = LogQuota {
            lines: 3,
            bytes: 10,
            used_up: false,
        };
        assert_eq!(quota.admit("hello"), Admitted::Line("hello"));
        // 5 bytes left: cut at a character boundary ("é" is two bytes).
        assert_eq!(quota.admit("abcdé"), Admitted::Line("abcd"));
        assert_eq!(quota.admit(""), Admitted::Line(""));
        assert_eq!(quota.admit("more"), Admitted::QuotaJustUsedUp);
        assert_eq!(quota.admit("more"), Admitted::Dropped);

        let mut quota = LogQuota {
            lines: 2,
            bytes: 1 << 10,
            used_up: false,
        };
        assert_eq!(quota.admit(""), Admitted::Line(""));
        assert_eq!(quota.admit(""), Admitted::Line(""));
        assert_eq!(
            quota.admit(""),
            Admitted::QuotaJustUsedUp,
            "empty lines count too"
        );
    }
}
