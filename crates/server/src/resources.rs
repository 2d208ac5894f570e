//! How much memory the node may plan on, and the size flags given relative to it.
//!
//! `--max-sql-memory=25%` means a quarter of what the process can really use: inside a
//! container that is the cgroup's memory limit (what Kubernetes' `resources.limits.memory`
//! sets, and what the kernel enforces), otherwise the machine's physical memory. Sizes are
//! also accepted as bytes with a unit (`64MiB`, `2GB`, `1073741824`).

use std::path::Path;

/// The memory the process may use: the cgroup limit when there is one, else physical memory.
pub fn memory_available() -> Option<u64> {
    let physical = physical_memory();
    match (cgroup_limit(), physical) {
        (Some(c), Some(p)) => Some(c.min(p)),
        (c, p) => c.or(p),
    }
}

fn physical_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The memory limit of the cgroup the process runs in (v2, else v1); `None` when unlimited.
fn cgroup_limit() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(Path::new(p)).ok();
    if let Some(v) = read("/sys/fs/cgroup/memory.max") {
        return v.trim().parse().ok();
    }
    // cgroup v1 reports "no limit" as a huge number.
    let v1: u64 = read("/sys/fs/cgroup/memory/memory.limit_in_bytes")?
        .trim()
        .parse()
        .ok()?;
    (v1 < 1 << 60).then_some(v1)
}

/// Parses a size: a percentage of `available` (`25%`), a fraction (`.25`), or bytes with an
/// optional unit (`64MiB`, `1GB`, `512k`).
pub fn parse_size(spec: &str, available: Option<u64>) -> Result<u64, String> {
    let s = spec.trim();
    let relative = |fraction: f64| -> Result<u64, String> {
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(format!(
                "{spec}: a share of memory must be above 0 and at most 100%"
            ));
        }
        let total = available.ok_or_else(|| {
            format!("{spec}: the machine's memory is unknown; give a size such as 1GiB")
        })?;
        Ok((total as f64 * fraction) as u64)
    };
    if let Some(p) = s.strip_suffix('%') {
        let pct: f64 = p
            .trim()
            .parse()
            .map_err(|_| format!("{spec}: not a percentage"))?;
        return relative(pct / 100.0);
    }
    if s.starts_with('.') || s.starts_with("0.") {
        let f: f64 = s.parse().map_err(|_| format!("{spec}: not a fraction"))?;
        return relative(f);
    }
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{spec}: not a size (try 64MiB, 2GiB or 25%)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        "t" | "tb" => 1_000_000_000_000,
        "tib" => 1 << 40,
        other => return Err(format!("{spec}: unknown unit {other:?}")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{spec}: too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_as_bytes_or_shares() {
        let gib = Some(1u64 << 30);
        assert_eq!(parse_size("64MiB", gib), Ok(64 << 20));
        assert_eq!(parse_size("2GB", gib), Ok(2_000_000_000));
        assert_eq!(parse_size("1048576", gib), Ok(1 << 20));
        assert_eq!(parse_size("25%", gib), Ok(256 << 20));
        assert_eq!(parse_size(".5", gib), Ok(512 << 20));
        assert!(parse_size("25%", None).is_err());
        assert!(parse_size("150%", gib).is_err());
        assert!(parse_size("lots", gib).is_err());
        assert!(parse_size("5 parsecs", gib).is_err());
        assert!(memory_available().is_some_and(|m| m > 0));
    }
}
