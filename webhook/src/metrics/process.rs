//! `process_*` metrics, read from `/proc/self` at each scrape: what every
//! Prometheus exporter offers (CPU time, memory, file descriptors, threads, start
//! time), with the conventional names, so standard dashboards and alerts work.
//! Linux only; elsewhere, or when `/proc` cannot be read, they are left out.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc/<pid>/stat`: USER_HZ, 100 on every Linux
/// architecture the kernel exports to user space.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Default)]
pub(super) struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Reading {
    pub(super) cpu_seconds: f64,
    pub(super) resident_bytes: Option<u64>,
    pub(super) virtual_bytes: Option<u64>,
    pub(super) threads: Option<u64>,
    pub(super) open_fds: Option<u64>,
    pub(super) max_fds: Option<u64>,
    pub(super) start_time_seconds: Option<f64>,
}

impl Reading {
    fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| field(&text, "btime").and_then(|v| v.parse::<f64>().ok()));
        let mut reading = Self::parse(&stat, &status, boot_time)?;
        reading.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        reading.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|limits| max_open_files(&limits));
        Some(reading)
    }

    /// From the texts of `/proc/self/stat` and `/proc/self/status`.
    pub(super) fn parse(stat: &str, status: &str, boot_time: Option<f64>) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        // After the name: state is field 3, so field n is fields[n - 3].
        let number = |n: usize| fields.get(n - 3)?.parse::<f64>().ok();
        Some(Self {
            cpu_seconds: (number(14)? + number(15)?) / USER_HZ,
            resident_bytes: status_bytes(status, "VmRSS"),
            virtual_bytes: status_bytes(status, "VmSize"),
            threads: field(status, "Threads").and_then(|v| v.parse().ok()),
            start_time_seconds: boot_time
                .zip(number(22))
                .map(|(boot, ticks)| boot + ticks / USER_HZ),
            ..Self::default()
        })
    }
}

/// User and system CPU time of process `pid` (`self` or a number) so far.
pub(crate) fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Reading::parse(&stat, "", None).map(|reading| reading.cpu_seconds)
}

/// Context switches of process `pid` (`self` or a number) so far: voluntary
/// (a thread went to sleep: waiting for work, a lock, I/O) and not (it was
/// preempted), summed over the threads it has now (a thread that ended takes
/// its count with it).
pub(crate) fn context_switches(pid: &str) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let switches = tasks
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("status")).ok())
        .map(|status| thread_switches(&status))
        .sum();
    Some(switches)
}

/// The context switches a thread's `/proc/<pid>/task/<tid>/status` counts.
fn thread_switches(status: &str) -> u64 {
    ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
        .iter()
        .filter_map(|key| field(status, key)?.parse::<u64>().ok())
        .sum()
}

/// Resident memory of process `pid` (`self` or a number) now.
pub(crate) fn resident_bytes(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_bytes(&status, "VmRSS")
}

/// A `/proc/<pid>/status` size (`VmRSS:   40960 kB`) in bytes.
fn status_bytes(status: &str, key: &str) -> Option<u64> {
    field(status, key)?
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()
        .map(|kib| kib * 1024)
}

/// The value of `key:` or `key ` in a `/proc` text.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?;
        let rest = rest.strip_prefix(':').unwrap_or(rest);
        rest.starts_with([' ', '\t']).then(|| rest.trim())
    })
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(reading) = Reading::now() else {
            return Ok(());
        };
        let cpu = ConstCounter::new(reading.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "User and system CPU time spent",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory",
                reading.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory",
                reading.virtual_bytes,
            ),
            ("process_threads", "OS threads", reading.threads),
            (
                "process_open_fds",
                "Open file descriptors",
                reading.open_fds,
            ),
            (
                "process_max_fds",
                "Most file descriptors the process may open",
                reading.max_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(value as i64);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(start) = reading.start_time_seconds {
            let gauge = ConstGauge::new(start);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc_texts_including_a_command_name_with_spaces() {
        let stat = "4242 (stsguard eval) S 1 4242 4242 0 -1 4194560 3000 0 0 0 250 50 0 0 20 0 7 0 12345 \
                    1000000 2000 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let status = "Name:\tstsguard\nVmSize:\t  204800 kB\nVmRSS:\t   40960 kB\nThreads:\t7\n";
        let reading = Reading::parse(stat, status, Some(1_700_000_000.0)).unwrap();
        assert_eq!(reading.cpu_seconds, 3.0);
        assert_eq!(reading.resident_bytes, Some(40960 * 1024));
        assert_eq!(reading.virtual_bytes, Some(204800 * 1024));
        assert_eq!(reading.threads, Some(7));
        assert_eq!(reading.start_time_seconds, Some(1_700_000_000.0 + 123.45));
        assert_eq!(Reading::parse("garbage", "", None), None);
        assert_eq!(
            max_open_files(
                "Limit  Soft Limit  Hard Limit  Units\nMax open files  1048576  1048576  files\n"
            ),
            Some(1048576)
        );
    }

    #[test]
    fn context_switches_are_counted_over_every_thread() {
        let status =
            "Name:\tstsguard\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(thread_switches(status), 127);
        assert_eq!(thread_switches("Name:\tstsguard\n"), 0);
        // A process that went to sleep has switched out at least once. (Not
        // this one: other tests' threads end meanwhile and take their counts.)
        let mut sleeper = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .expect("sleep runs");
        std::thread::sleep(std::time::Duration::from_millis(200));
        let switches = context_switches(&sleeper.id().to_string());
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
        assert!(switches.expect("/proc/<pid>/task is readable on Linux") >= 1);
        assert_eq!(context_switches("no-such-process"), None);
    }

    #[test]
    fn this_process_can_be_read() {
        let reading = Reading::now().expect("/proc/self is readable on Linux");
        assert!(reading.resident_bytes.unwrap() > 0 && reading.open_fds.unwrap() > 0);
    }
}
