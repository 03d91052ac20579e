//! Separate hosts on one machine: network namespaces joined by veth pairs to a bridge that lives
//! in a namespace of its own (nothing in the machine's own network changes). Root only.
#![allow(dead_code)]

use std::process::Command;

/// Why namespaced tests cannot run here, if they cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root: network namespaces need CAP_NET_ADMIN".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the `ip` command (iproute2) is missing".into()),
    }
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

/// `hosts` namespaces `<id>n<i>`, host `i` at `10.<a>.<b>.<i+1>/24` on interface `<id>v<i>`.
pub struct Hosts {
    pub id: String,
    pub names: Vec<String>,
    pub addrs: Vec<String>,
    bridge: String,
}

impl Hosts {
    pub fn new(hosts: usize) -> Hosts {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let k = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let id = format!("rt{}{}", pid % 100_000, k);
        let (a, b) = (100 + (pid % 100) as u8, ((pid / 100) % 200) as u8 + k as u8);
        let bridge = format!("{id}br");
        ip(&["netns", "add", &bridge]);
        let mut me = Hosts { id: id.clone(), names: Vec::new(), addrs: Vec::new(), bridge: bridge.clone() };
        ip(&["-n", &bridge, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &bridge, "link", "set", "br0", "up"]);
        for i in 0..hosts {
            let ns = format!("{id}n{i}");
            let (v, p) = (format!("{id}v{i}"), format!("{id}p{i}"));
            ip(&["netns", "add", &ns]);
            me.names.push(ns.clone());
            ip(&["link", "add", &v, "type", "veth", "peer", "name", &p]);
            ip(&["link", "set", &v, "netns", &ns]);
            ip(&["link", "set", &p, "netns", &bridge]);
            let addr = format!("10.{a}.{b}.{}", i + 1);
            ip(&["-n", &ns, "addr", "add", &format!("{addr}/24"), "dev", &v]);
            ip(&["-n", &ns, "link", "set", &v, "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &bridge, "link", "set", &p, "master", "br0"]);
            ip(&["-n", &bridge, "link", "set", &p, "up"]);
            me.addrs.push(addr);
        }
        me
    }

    /// Cuts host `i` off the network (its end of the link goes down).
    pub fn cut(&self, i: usize) {
        ip(&["-n", &self.names[i], "link", "set", &format!("{}v{i}", self.id), "down"]);
    }

    /// A script that runs a shell command line in a namespace: `script NAMESPACE COMMAND`, the way
    /// `ssh HOST COMMAND` runs it on a host.
    pub fn rsh(&self, dir: &std::path::Path) -> String {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("{}-rsh", self.id));
        std::fs::write(&path, "#!/bin/sh\nexec ip netns exec \"$1\" sh -c \"$2\"\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.names.iter().chain(std::iter::once(&self.bridge)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
