//! counter-app: the StatefulSet course-lab app done right. `GET /` shows the time and counts
//! a visit; the count lives in one file on the pod's persistent volume.
//!
//! What "right" means, against what the course labs did: probes and
//! scrapes never count as visits (theirs hit `/` and inflated every pod's count); a visit is
//! answered only once it is on disk; concurrent visits are never lost and share one fsync;
//! a crash cannot leave a torn or empty file; a corrupt file stops the app instead of being
//! overwritten with 0; a full or read-only disk gives 503 and the app recovers with the disk.
//!
//! ```text
//!             ┌──────────── server ─────────────┐
//!  HTTP ─────▶│ stamp (x-pod-name, metrics)     │
//!             │  /         ──visit()──────────────▶ counter ──▶ commit threads ──▶ visits file
//!             │  /readyz   ──probe()──────────────▶    │          (group commit:     (temp, fsync,
//!             │  /visits   ──count()──────────────▶    │           one fsync for      rename,
//!             │  /metrics  ──encode()─▶ metrics ◀──────┘           many visits)       dir fsync)
//!             │  /healthz                       │
//!             └─────────────────────────────────┘
//!  page: renders the HTML with clock (time zone) and pod (who served it)
//! ```
//!
//! Modules: [`cli`] (flags and start-up), [`server`] (routes, [`server::router`],
//! [`server::run`]), [`counter`] (the count, group commit, the file), [`page`], [`clock`],
//! [`pod`], [`metrics`], and [`load`] (the `counter-load` benchmark client).

pub mod cli;
pub mod clock;
pub mod counter;
pub mod load;
pub mod metrics;
pub mod page;
pub mod pod;
pub mod server;

pub use cli::Args;
pub use server::{AppState, router, run};
