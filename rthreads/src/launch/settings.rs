//! Checks on the `RTHREADS_*` settings a node starts with, and defaults that depend on the cluster.
//!
//! - An `RTHREADS_*` variable that no part of rthreads reads is most likely a typo
//!   (`RTHREADS_NODE=2` for `RTHREADS_NODES=2`), which would otherwise be ignored in silence.
//!   [`check_environment`] prints one warning line per such variable, on node 0 only and once per
//!   run, naming the known setting closest to it.
//! - [`default_space_size`]: the size of the shared space when `RTHREADS_SPACE_SIZE` is unset.
//!
//! The rule for the cluster secret (at least 16 bytes) lives with the secret itself,
//! in `net::Secret::from_setting`, which the launcher shares.

use dsm::SpaceLayout;

/// Every `RTHREADS_*` variable something in this workspace reads: the runtime (the table at the
/// top of `launch/config.rs`, plus the variables it sets for itself), the launcher, and the test and
/// benchmark programs. A test (`every_variable_the_workspace_reads_is_known`) checks this list
/// against the sources.
pub(crate) const KNOWN: &[&str] = &[
    "RTHREADS_NODES",
    "RTHREADS_NODE_ID",
    "RTHREADS_COORDINATOR",
    "RTHREADS_BIND",
    "RTHREADS_INTERFACE",
    "RTHREADS_PORT_RANGE",
    "RTHREADS_EXTERNAL",
    "RTHREADS_SESSION",
    "RTHREADS_SECRET",
    "RTHREADS_SECRET_FILE",
    "RTHREADS_FAILURE_TIMEOUT",
    "RTHREADS_AUTH_TIMEOUT",
    "RTHREADS_PROTOCOL",
    "RTHREADS_PREFETCH",
    "RTHREADS_READ_AHEAD",
    "RTHREADS_PREPARE",
    "RTHREADS_DIRECT_READS",
    "RTHREADS_DROP_COPIES",
    "RTHREADS_BARRIER_PREFETCH",
    "RTHREADS_OWN_AFTER",
    "RTHREADS_REFRESH",
    "RTHREADS_CONNECT",
    "RTHREADS_TREE_FANOUT",
    "RTHREADS_SPACE_SIZE",
    "RTHREADS_STARTUP_TIMEOUT",
    "RTHREADS_TRACE",
    "RTHREADS_TRACE_EVENTS",
    "RTHREADS_STATS",
    "RTHREADS_FAULT_SPIN",
    "RTHREADS_WAKE_PIPES",
    "RTHREADS_NET_DELAY_US",
    "RTHREADS_POLL_US",
    "RTHREADS_DIRECT_POLL_US",
    "RTHREADS_PREFIX",
    "RTHREADS_PLACEMENT",
    "RTHREADS_REBALANCE",
    "RTHREADS_PIN",
    "RTHREADS_WATCH_STDIN",
    // Set by rthreads for its own processes.
    "RTHREADS_REEXEC",
    "RTHREADS_LISTEN_FD",
    "RTHREADS_NODE0_PID",
    "RTHREADS_BINARY_HASH",
    // Benchmark and test programs of this workspace.
    "RTHREADS_FS_WORK",
    "RTHREADS_BENCH_REPEAT",
    "RTHREADS_CHAOS_TAG",
];

/// Families of variables that are all known: tests tag the processes they start with them.
const KNOWN_PREFIXES: &[&str] = &["RTHREADS_TEST_"];

const PREFIX: &str = "RTHREADS_";

/// Whether `name` is a variable rthreads reads.
pub(crate) fn is_known(name: &str) -> bool {
    KNOWN.contains(&name) || KNOWN_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The edit distance between `a` and `b`: insertions, deletions, substitutions and swaps of two
/// neighbouring characters each count one (the "optimal string alignment" distance).
fn distance(a: &[u8], b: &[u8]) -> usize {
    // Three rows of the dynamic-programming table: two back, one back, this one.
    let mut back2 = vec![0usize; b.len() + 1];
    let mut back1: Vec<usize> = (0..=b.len()).collect();
    let mut row = vec![0usize; b.len() + 1];
    for i in 1..=a.len() {
        row[0] = i;
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut d = (back1[j] + 1).min(row[j - 1] + 1).min(back1[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d = d.min(back2[j - 2] + 1);
            }
            row[j] = d;
        }
        std::mem::swap(&mut back2, &mut back1);
        std::mem::swap(&mut back1, &mut row);
    }
    back1[b.len()]
}

/// The known setting `name` most likely meant, if one is close enough to be a typo: at most one
/// edit per three characters after `RTHREADS_` (at least one, at most three), ignoring case; or,
/// failing that, the only known setting that `name` begins (`RTHREADS_PORT` for
/// `RTHREADS_PORT_RANGE`).
pub(crate) fn closest(name: &str) -> Option<&'static str> {
    let upper = name.to_ascii_uppercase();
    let suffix = upper.strip_prefix(PREFIX).unwrap_or(&upper);
    let allowed = (suffix.len() / 3).clamp(1, 3);
    let best = KNOWN
        .iter()
        .map(|k| (distance(upper.as_bytes(), k.as_bytes()), *k))
        .min_by_key(|&(d, _)| d)
        .filter(|&(d, _)| d <= allowed)
        .map(|(_, k)| k);
    best.or_else(|| {
        let mut longer = KNOWN.iter().filter(|k| k.starts_with(upper.as_str()));
        let first = longer.next().filter(|_| suffix.len() >= 3);
        first.filter(|_| longer.next().is_none()).copied()
    })
}

/// The warning for environment variable `name`: `None` unless it looks like an rthreads setting
/// (it begins with `RTHREADS_`, in any case) that rthreads does not know.
pub(crate) fn warning(name: &str) -> Option<String> {
    let looks_like_ours = name.len() >= PREFIX.len() && name[..PREFIX.len()].eq_ignore_ascii_case(PREFIX);
    if !looks_like_ours || is_known(name) {
        return None;
    }
    Some(match closest(name) {
        Some(k) => format!("rthreads: warning: {name} is not a setting rthreads knows; did you mean {k}?"),
        None => format!(
            "rthreads: warning: {name} is not a setting rthreads knows (the settings are listed in the \
             README's \"Configuration\" table)"
        ),
    })
}

/// Whether this process is node 0, judged from the variables that give a rank, in the order
/// `bootstrap::detect` reads them (the configuration is not parsed yet when this runs).
fn is_node_0() -> bool {
    let get = |n: &str| std::env::var(n).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    let rank = get("RTHREADS_NODE_ID")
        .or_else(|| get("SLURM_STEP_ID").and_then(|_| get("SLURM_PROCID")))
        .or_else(|| get("OMPI_COMM_WORLD_RANK"))
        .or_else(|| get("PMI_RANK"));
    rank.is_none_or(|r| r == "0")
}

/// Prints a warning for every `RTHREADS_*` variable of the environment that rthreads does not
/// know, naming the closest known one. Only node 0 warns (every node of a run normally sees the
/// same environment), and only in the process that goes on to run: node 0 re-executes itself once
/// at start-up (see `launch`), and the re-executed process, which carries `RTHREADS_REEXEC`, stays
/// quiet.
pub(crate) fn check_environment() {
    if std::env::var_os("RTHREADS_REEXEC").is_some() || !is_node_0() {
        return;
    }
    let mut names: Vec<String> = std::env::vars_os().filter_map(|(k, _)| k.into_string().ok()).collect();
    names.sort();
    for name in names {
        if let Some(w) = warning(&name) {
            crate::log::say(&w);
        }
    }
}

/// Bytes of shared space every node gets, at least, when `RTHREADS_SPACE_SIZE` is unset.
pub(crate) const DEFAULT_SPACE_PER_NODE: usize = 4 << 30;

/// The shared space's size when `RTHREADS_SPACE_SIZE` is unset: [`SpaceLayout::DEFAULT_SIZE`]
/// (64 GiB), or [`DEFAULT_SPACE_PER_NODE`] (4 GiB) per node, whichever is larger, so that every
/// node's share (its arena) stays at 4 GiB or more however many nodes run: 16 GiB each for 4
/// nodes, 4 GiB each for 64 or 256 nodes.
///
/// The space is only reserved: both of its views are `MAP_NORESERVE` mappings of a sparse memory
/// file, the fault handler's guard bitmap (1 bit per page) is also `MAP_NORESERVE`, and the
/// protocols keep their per-page state in maps that grow with the pages used. So a larger space
/// costs address space (twice its size: at 1024 nodes, 2 × 4 TiB of the 128 TiB user half, the
/// application view at 32..36 TiB), not memory, until pages are touched. Every node derives the
/// same size from the same node count, so the handshake's `space=` setting still agrees.
pub(crate) fn default_space_size(nodes: u16) -> usize {
    SpaceLayout::DEFAULT_SIZE.max(usize::from(nodes) * DEFAULT_SPACE_PER_NODE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance() {
        assert_eq!(distance(b"", b""), 0);
        assert_eq!(distance(b"abc", b""), 3);
        assert_eq!(distance(b"", b"ab"), 2);
        assert_eq!(distance(b"NODE", b"NODES"), 1);
        assert_eq!(distance(b"PROTOCLO", b"PROTOCOL"), 1, "a swap is one edit");
        assert_eq!(distance(b"kitten", b"sitting"), 3);
        assert_eq!(distance(b"NODES", b"NODE_ID"), 3);
    }

    #[test]
    fn typos_name_the_setting_they_miss() {
        for (typo, meant) in [
            ("RTHREADS_NODE", "RTHREADS_NODES"),
            ("RTHREADS_NODEID", "RTHREADS_NODE_ID"),
            ("RTHREADS_PROTOCLO", "RTHREADS_PROTOCOL"),
            ("RTHREADS_SPACESIZE", "RTHREADS_SPACE_SIZE"),
            ("RTHREADS_FAILURE_TIMOUT", "RTHREADS_FAILURE_TIMEOUT"),
            ("RTHREADS_SECRETFILE", "RTHREADS_SECRET_FILE"),
            ("RTHREADS_STAT", "RTHREADS_STATS"),
            ("RTHREADS_TRACE_EVENT", "RTHREADS_TRACE_EVENTS"),
            ("RTHREADS_PLACMENT", "RTHREADS_PLACEMENT"),
            ("rthreads_nodes", "RTHREADS_NODES"),
            ("Rthreads_Protocol", "RTHREADS_PROTOCOL"),
            ("RTHREADS_STARTUP_TIME", "RTHREADS_STARTUP_TIMEOUT"),
            // Not a typo but a beginning that only one setting has.
            ("RTHREADS_PORT", "RTHREADS_PORT_RANGE"),
            ("RTHREADS_FAILURE", "RTHREADS_FAILURE_TIMEOUT"),
        ] {
            assert_eq!(closest(typo), Some(meant), "{typo}");
            let w = warning(typo).unwrap();
            assert_eq!(
                w,
                format!("rthreads: warning: {typo} is not a setting rthreads knows; did you mean {meant}?")
            );
        }
    }

    #[test]
    fn names_far_from_every_setting_get_no_guess() {
        for name in
            ["RTHREADS_XYZZY", "RTHREADS_THREADS", "RTHREADS_", "RTHREADS_A", "RTHREADS_SECRET_KEY_PATH"]
        {
            assert_eq!(closest(name), None, "{name}");
            let w = warning(name).unwrap();
            assert!(w.contains("is not a setting rthreads knows (") && !w.contains("did you mean"), "{w}");
        }
        // A beginning shared by several settings names none of them.
        assert_eq!(closest("RTHREADS_SEC"), None);
        assert_eq!(closest("RTHREADS_SECRE"), Some("RTHREADS_SECRET"));
    }

    #[test]
    fn known_and_foreign_variables_get_no_warning() {
        for name in KNOWN {
            assert_eq!(warning(name), None, "{name}");
        }
        for name in
            ["RTHREADS_TEST_TAG", "RTHREADS_TEST_ANYTHING", "PATH", "HOME", "RTHREAD", "XRTHREADS_NODES"]
        {
            assert_eq!(warning(name), None, "{name}");
        }
    }

    #[test]
    fn the_default_space_gives_every_node_4_gib_or_more() {
        assert_eq!(default_space_size(1), 64 << 30);
        assert_eq!(default_space_size(4), 64 << 30);
        assert_eq!(default_space_size(16), 64 << 30);
        assert_eq!(default_space_size(64), 256 << 30);
        assert_eq!(default_space_size(256), 1 << 40);
        assert_eq!(default_space_size(1024), 4 << 40);
        for n in [1u16, 2, 3, 17, 64, 100, 256, 1000, 1024] {
            assert!(default_space_size(n) / usize::from(n) >= DEFAULT_SPACE_PER_NODE, "{n}");
        }
        // Both views of the largest default fit in the 47-bit user half above the base.
        assert!(SpaceLayout::DEFAULT_BASE + 2 * default_space_size(1024) < 1 << 47);
    }

    /// Every `"RTHREADS_...` string literal in the workspace's Rust sources, and every row of the
    /// configuration table in `launch/config.rs`, names a known setting: a variable added anywhere must
    /// be added to [`KNOWN`] too, or node 0 would warn about it.
    #[test]
    fn every_variable_the_workspace_reads_is_known() {
        fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap().flatten() {
                let p = e.path();
                let name = e.file_name();
                if name == "target" || name.to_string_lossy().starts_with('.') {
                    continue;
                }
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        // Files that use unknown names on purpose, to test this warning.
        const ON_PURPOSE: &[&str] =
            &["rthreads/src/launch/settings.rs", "tests/hardening.rs", "tests/programs/check_settings.rs"];
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut files = Vec::new();
        walk(root, &mut files);
        let mut seen = 0;
        for f in files {
            let rel = f.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            if ON_PURPOSE.contains(&rel.as_str()) {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            let mut names: Vec<&str> = Vec::new();
            for (at, _) in text.match_indices("\"RTHREADS_") {
                names.push(&text[at + 1..]);
            }
            if rel == "rthreads/src/launch/config.rs" {
                for (at, _) in text.match_indices("//! | `RTHREADS_") {
                    names.push(&text[at + 7..]);
                }
            }
            for rest in names {
                let end = rest.find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'));
                let name = &rest[..end.unwrap_or(rest.len())];
                if name == PREFIX {
                    continue;
                }
                seen += 1;
                assert!(is_known(name), "{rel} reads {name}, which settings::KNOWN lacks");
            }
        }
        assert!(seen > 50, "found only {seen} uses of RTHREADS_ variables: is the workspace there?");
    }
}
