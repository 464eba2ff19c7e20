//! CPU time of this process and of each of its threads, from /proc, to tell a
//! CPU-bound run from one that waits (and which thread is the busy one).

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Clock ticks per second of /proc's utime and stime (USER_HZ, 100 on Linux).
const TICKS_PER_SEC: f64 = 100.0;

/// CPU ticks of the process and its threads at one moment.
pub struct Snapshot {
    at: Instant,
    process: u64,
    threads: HashMap<u32, (String, u64)>,
}

/// One thread's share of a measured interval.
pub struct ThreadUse {
    pub name: String,
    pub tid: u32,
    /// Percent of one core.
    pub pct: f64,
}

/// CPU use over an interval.
pub struct Usage {
    /// Percent of one core (200 = two cores busy).
    pub process_pct: f64,
    /// Busiest threads first.
    pub threads: Vec<ThreadUse>,
    pub cores: usize,
}

/// utime + stime, and the command name, of a `/proc/.../stat` line.
pub(crate) fn parse_stat(stat: &str) -> Option<(String, u64)> {
    // The name is in parentheses and may contain spaces; fields follow the last `)`.
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// Reads the process's and its threads' CPU time; `None` without /proc.
pub fn snapshot() -> Option<Snapshot> {
    let at = Instant::now();
    let (_, process) = parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let mut threads = HashMap::new();
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if let Some(t) = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| parse_stat(&s))
        {
            threads.insert(tid, t);
        }
    }
    Some(Snapshot { at, process, threads })
}

/// CPU use between two snapshots.
pub fn usage(before: &Snapshot, after: &Snapshot) -> Usage {
    let secs = after
        .at
        .duration_since(before.at)
        .max(Duration::from_millis(1))
        .as_secs_f64();
    let pct = |ticks: u64| 100.0 * ticks as f64 / TICKS_PER_SEC / secs;
    let mut threads: Vec<ThreadUse> = after
        .threads
        .iter()
        .map(|(&tid, (name, ticks))| {
            let was = before.threads.get(&tid).map(|(_, t)| *t).unwrap_or(0);
            ThreadUse {
                name: name.clone(),
                tid,
                pct: pct(ticks.saturating_sub(was)),
            }
        })
        .collect();
    threads.sort_by(|a, b| b.pct.total_cmp(&a.pct));
    Usage {
        process_pct: pct(after.process.saturating_sub(before.process)),
        threads,
        cores: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_spaces_in_the_name() {
        let line = "1234 (sqlx-sqlite wor) S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 1 0 100 0 0";
        assert_eq!(parse_stat(line), Some(("sqlx-sqlite wor".to_string(), 290)));
        assert_eq!(parse_stat("garbage"), None);
    }
}
