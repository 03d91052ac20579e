//! Acceptance 3: remote panics come back through `join`; `&'static` data means the same on
//! every node.
static TABLE: [&str; 4] = ["zero", "one", "two", "three"];
static SQUARES: [u32; 5] = [0, 1, 4, 9, 16];

#[rthreads::main]
fn main() {
    let nodes = rthreads::node_count();
    for n in 1..nodes {
        let h = rthreads::Builder::new()
            .node(n)
            .spawn(move || -> u32 { panic!("boom on node {}", rthreads::current_node()) })
            .unwrap();
        let err = h.join().unwrap_err();
        let msg = err.downcast_ref::<String>().expect("a String payload");
        assert_eq!(msg, &format!("boom on node {n}"));
        println!("caught: {msg}");
        let h = rthreads::Builder::new().node(n).spawn(|| -> u32 { panic!("static message") }).unwrap();
        let err = h.join().unwrap_err();
        assert_eq!(err.downcast_ref::<&str>(), Some(&"static message"));
    }
    println!("program continues after remote panics");
    let greeting: &'static str = "hello from a literal";
    let handles: Vec<_> = (0..nodes)
        .map(|n| {
            rthreads::Builder::new()
                .node(n)
                .spawn(move || {
                    let line = format!(
                        "node {}: {greeting} / {} / {}",
                        rthreads::current_node(),
                        TABLE[n % 4],
                        SQUARES.iter().sum::<u32>()
                    );
                    println!("{line}");
                    line
                })
                .unwrap()
        })
        .collect();
    for (n, h) in handles.into_iter().enumerate() {
        assert_eq!(h.join().unwrap(), format!("node {n}: hello from a literal / {} / 30", TABLE[n % 4]));
    }
}
