//! System calls on shared memory: every node prints, reads files into and writes from buffers
//! that live on other nodes (the kernel never traps on protected pages; rthreads makes it work).
use std::io::{Read, Write};

#[rthreads::main]
fn main() {
    let nodes = rthreads::node_count();
    let dir = std::env::temp_dir().join(format!("rthreads-io-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("input.bin");
    let content: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &content).unwrap();

    for n in 0..nodes {
        // A buffer made (and last written) on node n...
        let buf = rthreads::Builder::new().node(n).spawn(|| vec![0u8; 200_000]).unwrap().join().unwrap();
        // ...filled by read(2) on node (n + 1) % nodes.
        let p = path.clone();
        let filled = rthreads::Builder::new()
            .node((n + 1) % nodes)
            .spawn(move || {
                let mut buf = buf;
                std::fs::File::open(p).unwrap().read_exact(&mut buf).unwrap();
                buf
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(filled, content, "read into a buffer from node {n}");
        // A String made on node 0 written by write(2) on node n, and printed there.
        let text = format!("line written for node {n}\n").repeat(1000);
        let out = dir.join(format!("out{n}.txt"));
        let t2 = text.clone();
        rthreads::Builder::new()
            .node(n)
            .spawn(move || {
                std::fs::File::create(&out).unwrap().write_all(t2.as_bytes()).unwrap();
                println!("node {} wrote {} bytes made on node 0", rthreads::current_node(), t2.len());
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(std::fs::read_to_string(dir.join(format!("out{n}.txt"))).unwrap(), text);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    println!("io ok");
}
