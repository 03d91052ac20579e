//! Shared helpers for the rthreads examples, benchmarks and tools (`src/bin/`): the measuring
//! helpers, the platform facade the benchmark kernels are written against, the kernels, the
//! benchmark runner's plots and the tools' progress bars. (What the cluster programs the
//! integration tests launch share is in `tests/programs/fixture.rs`.)

pub mod kernels;
pub mod par;
pub mod plot;
pub mod progress;

pub mod bench {
    //! Measuring helpers shared by the benchmarks: every benchmark measures its baseline in the
    //! same run, so the ratios are what to compare.

    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    /// The `p` quantile (0..=1) of `v` (sorts `v`).
    ///
    /// # Panics
    /// If `v` is empty.
    pub fn percentile(v: &mut [Duration], p: f64) -> Duration {
        v.sort();
        v[((v.len() - 1) as f64 * p).round() as usize]
    }

    /// Microseconds, as a float.
    pub fn us(d: Duration) -> f64 {
        d.as_secs_f64() * 1e6
    }

    /// A field of this process's `/proc/self/status` in KiB (`"VmRSS"`: resident memory now,
    /// `"VmHWM"`: its peak), or 0 if there is none.
    pub fn status_kib(field: &str) -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        status
            .lines()
            .find(|l| l.split(':').next() == Some(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    /// `n` round trips of a 16-byte request answered with `reply` bytes over a fresh blocking TCP
    /// loopback connection with `TCP_NODELAY` (20 warm-up round trips are not counted).
    ///
    /// # Panics
    /// On socket errors.
    pub fn raw_rtt(n: usize, reply: usize) -> Vec<Duration> {
        raw_rtt_cpu(n, reply).0
    }

    /// [`raw_rtt`], plus the CPU time the client thread used over the measured round trips and the
    /// server thread over all of them (20 more), in nanoseconds (from
    /// `/proc/thread-self/schedstat`; 0 where it cannot be read).
    ///
    /// # Panics
    /// On socket errors.
    pub fn raw_rtt_cpu(n: usize, reply: usize) -> (Vec<Duration>, u64, u64) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            s.set_nodelay(true).unwrap();
            let page = vec![7u8; reply];
            let mut req = [0u8; 16];
            let before = thread_cpu_ns();
            while s.read_exact(&mut req).is_ok() {
                s.write_all(&page).unwrap();
            }
            thread_cpu_ns() - before
        });
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; reply];
        let mut out = Vec::with_capacity(n);
        let mut before = 0;
        for i in 0..n + 20 {
            if i == 20 {
                before = thread_cpu_ns();
            }
            let t = Instant::now();
            c.write_all(&[1u8; 16]).unwrap();
            c.read_exact(&mut buf).unwrap();
            if i >= 20 {
                out.push(t.elapsed());
            }
        }
        let client = thread_cpu_ns() - before;
        drop(c);
        let server = server.join().unwrap();
        (out, client, server)
    }

    /// CPU time this thread has used, in nanoseconds, as the scheduler accounts it; 0 if
    /// `/proc/thread-self/schedstat` cannot be read.
    pub fn thread_cpu_ns() -> u64 {
        schedstat_ns("/proc/thread-self/schedstat")
    }

    /// The CPU time, in nanoseconds, in a task's `schedstat` file (its first field); 0 if the
    /// file cannot be read.
    pub fn schedstat_ns(path: impl AsRef<std::path::Path>) -> u64 {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
            .unwrap_or(0)
    }

    /// Prints a table row: name, median and p90 in microseconds, and the sample count.
    pub fn row(name: &str, v: &mut [Duration]) -> Duration {
        let n = v.len();
        let m = percentile(v, 0.5);
        let p90 = percentile(v, 0.9);
        println!("{name:<44} {:>10.1} {:>10.1} {n:>8}", us(m), us(p90));
        m
    }

    /// Prints the table header that [`row`] fills.
    pub fn header() {
        println!("{:<44} {:>10} {:>10} {:>8}", "operation", "median us", "p90 us", "samples");
    }
}
