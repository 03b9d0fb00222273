//! One budget of linear memory shared by every running policy instance.
//!
//! Each policy has its own `memoryLimit`, but several evaluations run at once:
//! with a 64Mi limit and four evaluation threads, four runaway policies could
//! take 256Mi — the whole of the chart's container limit — and get the server
//! OOM-killed, failing every review in the cluster. The budget caps the sum: an
//! instance that would take the total over it fails its own evaluation (as
//! `memory_budget`, decided by its failurePolicy) while the server keeps its
//! memory. Instances reserve as their memory grows and give it all back when
//! their store is dropped.

use std::sync::atomic::{AtomicU64, Ordering};

/// The server-wide budget; shared by the engine and every store's limiter.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

impl MemoryBudget {
    pub fn new(limit: u64) -> Self {
        Self {
            limit,
            used: AtomicU64::new(0),
        }
    }

    /// The total all instances may hold, in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes held by running instances now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Takes `bytes` from the budget; `false` (and nothing taken) if that would
    /// exceed it.
    pub fn try_reserve(&self, bytes: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken by [`MemoryBudget::try_reserve`].
    pub fn release(&self, bytes: u64) {
        self.used.fetch_sub(bytes, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_up_to_the_limit_and_takes_back_what_is_released() {
        let budget = MemoryBudget::new(100);
        assert!(budget.try_reserve(60));
        assert!(!budget.try_reserve(41), "60 + 41 is over 100");
        assert_eq!(budget.used(), 60, "a refused reservation takes nothing");
        assert!(budget.try_reserve(40));
        assert!(!budget.try_reserve(1));
        budget.release(60);
        assert!(budget.try_reserve(u64::from(u32::MAX).min(60)));
        assert!(!budget.try_reserve(u64::MAX), "no overflow");
        budget.release(100);
        assert_eq!(budget.used(), 0);
    }
}
