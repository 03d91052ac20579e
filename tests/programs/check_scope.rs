//! Issue 8, acceptance 1: scoped threads on other nodes read and write the parent's stack arrays,
//! with the results std's scoped threads give on one machine.
use std::panic;

/// What every version computes: each of `parts` threads squares and offsets its share of `input`
/// into `out`, and adds its share into `sums[part]`.
fn work(part: usize, parts: usize, input: &[u64], out: &mut [u64], sum: &mut u64) {
    let chunk = input.len() / parts;
    for (i, o) in out.iter_mut().enumerate() {
        let x = input[part * chunk + i];
        *o = x * x + part as u64;
        *sum += x;
    }
}

fn with_std(input: &[u64; 4096], parts: usize) -> ([u64; 4096], Vec<u64>) {
    let mut out = [0u64; 4096];
    let mut sums = vec![0u64; parts];
    std::thread::scope(|s| {
        for (part, (o, sum)) in out.chunks_mut(4096 / parts).zip(sums.iter_mut()).enumerate() {
            s.spawn(move || work(part, parts, input, o, sum));
        }
    });
    (out, sums)
}

fn with_rthreads(input: &[u64; 4096], parts: usize) -> ([u64; 4096], Vec<u64>, Vec<usize>) {
    // Both arrays live on this thread's stack (32 KiB each); the threads write into them.
    let mut out = [0u64; 4096];
    let mut sums = [0u64; 16];
    let mut nodes = [usize::MAX; 16];
    rthreads::scope(|s| {
        let it = out.chunks_mut(4096 / parts).zip(sums.iter_mut()).zip(nodes.iter_mut()).enumerate();
        for (part, ((o, sum), node)) in it {
            s.spawn(move || {
                *node = rthreads::current_node();
                work(part, parts, input, o, sum);
            });
        }
    });
    (out, sums[..parts].to_vec(), nodes[..parts].to_vec())
}

fn compare(label: &str, input: &[u64; 4096], parts: usize) {
    let (a, sa) = with_std(input, parts);
    let (b, sb, nodes) = with_rthreads(input, parts);
    let mut used: Vec<usize> = nodes.clone();
    used.sort_unstable();
    used.dedup();
    println!("{label}: equal to std: {}, nodes used: {used:?}", a == b && sa == sb);
}

#[rthreads::main(nodes = 4)]
fn main() {
    let mut input = [0u64; 4096];
    for (i, x) in input.iter_mut().enumerate() {
        *x = (i as u64 * 7919) % 1000;
    }
    // 1. From main (node 0).
    compare("main's stack", &input, 8);

    // 2. From an rthread on node 2: its stack is in the shared space too.
    let h = rthreads::Builder::new().node(2).spawn(move || compare("node 2's stack", &input, 16)).unwrap();
    h.join().unwrap();

    // 3. Nested: a scope inside a scoped thread borrows that thread's local, and a scoped thread
    // adds a thread to the outer scope.
    let mut inner_nodes = [0usize; 4];
    let mut added = [0usize; 4];
    rthreads::scope(|s| {
        for (n, (c, e)) in inner_nodes.iter_mut().zip(added.iter_mut()).enumerate() {
            rthreads::Builder::new()
                .node(n)
                .spawn_scoped(s, move || {
                    let mut mine = 0;
                    rthreads::scope(|inner| {
                        let to = (n + 1) % rthreads::node_count();
                        rthreads::Builder::new()
                            .node(to)
                            .spawn_scoped(inner, || mine = rthreads::current_node() + 1)
                            .unwrap();
                    });
                    *c = mine;
                    s.spawn(move || *e = 100 + n);
                })
                .unwrap();
        }
    });
    println!("nested: {inner_nodes:?} {added:?}");

    // 4. Panics: an unjoined one makes the scope panic; a joined one does not.
    let unjoined = panic::catch_unwind(|| {
        rthreads::scope(|s| {
            rthreads::Builder::new().node(1).spawn_scoped(s, || panic!("scoped boom")).unwrap();
        })
    });
    let msg = unjoined.err().and_then(|e| e.downcast_ref::<&str>().map(|s| s.to_string()));
    println!("unjoined panic: {msg:?}");
    let joined = rthreads::scope(|s| {
        let h = rthreads::Builder::new().node(3).spawn_scoped(s, || panic!("joined boom")).unwrap();
        h.join().unwrap_err().downcast_ref::<&str>().map(|s| s.to_string())
    });
    println!("joined panic: {joined:?}");

    // 5. A scope opened on a thread with a private stack keeps its threads on that node.
    let private = std::thread::spawn(|| {
        let mut v = [0usize; 8];
        rthreads::scope(|s| {
            for x in v.iter_mut() {
                s.spawn(move || *x = rthreads::current_node() + 1);
            }
        });
        v
    })
    .join()
    .unwrap();
    println!("private stack: {private:?}");
}
