//! Bootstrap: which node this process is and where node 0 listens (from `RTHREADS_*` or from the
//! launcher that started it), the listening socket, the re-exec that turns address randomisation
//! off, the binary's identity, and joining the mesh.
//!
//! # Which node, how many, where node 0 is
//! Which node this process is, and how many there are, comes from the first of:
//! 1. `RTHREADS_NODE_ID` and `RTHREADS_NODES` (what `rthreads run` sets);
//! 2. Slurm, inside a job step (`srun`): `SLURM_PROCID`, `SLURM_NTASKS`; node 0's host is the first
//!    host of `SLURM_STEP_NODELIST`;
//! 3. Open MPI (`mpirun`): `OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`;
//! 4. PMI launchers (MPICH's Hydra, Intel MPI): `PMI_RANK`, `PMI_SIZE`;
//! 5. none: this process is node 0 of an embedded local cluster and starts the other nodes itself.
//!
//! Under 2–4 node 0 listens on a port every rank derives from the job's id (`RTHREADS_PORT_RANGE`
//! picks the range), on loopback when every rank is on one host. Open MPI and PMI do not say which
//! host rank 0 runs on, so a run over several hosts needs `RTHREADS_COORDINATOR=host:port`. The
//! secret must reach every rank: `mpirun -x RTHREADS_SECRET`, a secret file on a shared home, or
//! Slurm's environment propagation.
//!
//!
//! # Why the re-exec
//! Closures travel between nodes as pointers, and they point into the binary: code, vtables,
//! string literals, `&'static` tables. So every node must load the binary at the same address.
//! Each process turns address randomisation off *for itself* (`personality(ADDR_NO_RANDOMIZE)`,
//! inherited by the nodes it starts) and re-executes itself once; the machine's setting is not
//! touched. The handshake then checks that every node's binary is the same file, loaded at the
//! same address, with the same protocol and space size, and refuses a node that differs, naming
//! the difference.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::Command;

use dsm::NodeId;
use net::{BinaryId, Hello, Mesh, MeshConfig};

use super::StartError;
use super::config::{Config, ConfigError, Env};

/// Rank and size as an existing launcher (Slurm, Open MPI, a PMI launcher) gives them.
pub(super) struct Launcher {
    /// This process's rank.
    pub(super) node: u32,
    /// The number of ranks.
    pub(super) nodes: u32,
    /// What started us, for messages.
    source: &'static str,
    /// Identifies the job: every rank sees the same text, which seeds the session and the port.
    job: String,
    /// Every rank runs on this host.
    single_host: bool,
    /// Node 0's host, where the launcher tells it (Slurm's node list).
    first_host: Option<String>,
}

impl Launcher {
    /// The session id every rank of the job derives alike.
    pub(super) fn session(&self) -> u64 {
        fnv(&self.job)
    }
}

/// Variable `name` as a number, if set.
fn number(env: Env<'_>, name: &'static str) -> Result<Option<u32>, ConfigError> {
    let parse = |value: String| value.trim().parse().map_err(|_| ConfigError::NotANumber { name, value });
    env.get(name).map(parse).transpose()
}

/// The first host of a Slurm host list such as `node[03-05,9],gpu1`: `node03`.
fn first_slurm_host(list: &str) -> Option<String> {
    let mut depth = 0;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let first = list[..end].trim();
    let Some(open) = first.find('[') else { return (!first.is_empty()).then(|| first.to_owned()) };
    let close = first[open..].find(']')? + open;
    let inner = &first[open + 1..close];
    let lowest = inner.split([',', '-']).next()?;
    Some(format!("{}{}{}", &first[..open], lowest, &first[close + 1..]))
}

/// The launcher that started this process, if any (and `RTHREADS_NODE_ID` does not say which
/// node it is).
///
/// # Errors
/// A launcher's rank or size variable that is not a number.
pub(super) fn detect(env: Env<'_>) -> Result<Option<Launcher>, ConfigError> {
    if env.get("RTHREADS_NODE_ID").is_some() {
        return Ok(None);
    }
    if env.get("SLURM_STEP_ID").is_some()
        && let (Some(rank), Some(size)) = (number(env, "SLURM_PROCID")?, number(env, "SLURM_NTASKS")?)
    {
        let list =
            env.get("SLURM_STEP_NODELIST").or_else(|| env.get("SLURM_JOB_NODELIST")).unwrap_or_default();
        let hosts = number(env, "SLURM_STEP_NUM_NODES")?.or(number(env, "SLURM_NNODES")?);
        return Ok(Some(Launcher {
            node: rank,
            nodes: size,
            source: "Slurm (SLURM_PROCID/SLURM_NTASKS)",
            job: format!(
                "slurm-{}.{}",
                env.get("SLURM_JOB_ID").unwrap_or_default(),
                env.get("SLURM_STEP_ID").unwrap_or_default()
            ),
            single_host: hosts == Some(1),
            first_host: first_slurm_host(&list),
        }));
    }
    if let (Some(rank), Some(size)) =
        (number(env, "OMPI_COMM_WORLD_RANK")?, number(env, "OMPI_COMM_WORLD_SIZE")?)
    {
        let job =
            env.get("OMPI_MCA_ess_base_jobid").or_else(|| env.get("PMIX_NAMESPACE")).unwrap_or_default();
        return Ok(Some(Launcher {
            node: rank,
            nodes: size,
            source: "Open MPI (OMPI_COMM_WORLD_RANK/SIZE)",
            job: format!("ompi-{job}"),
            single_host: number(env, "OMPI_COMM_WORLD_LOCAL_SIZE")? == Some(size),
            first_host: None,
        }));
    }
    if let (Some(rank), Some(size)) = (number(env, "PMI_RANK")?, number(env, "PMI_SIZE")?) {
        let job = env
            .get("PMI_JOBID")
            .or_else(|| env.get("PMIX_NAMESPACE"))
            // SAFETY: getppid has no preconditions.
            .unwrap_or_else(|| format!("ppid{}", unsafe { libc::getppid() }));
        return Ok(Some(Launcher {
            node: rank,
            nodes: size,
            source: "a PMI launcher (PMI_RANK/PMI_SIZE)",
            job: format!("pmi-{job}"),
            single_host: number(env, "MPI_LOCALNRANKS")? == Some(size),
            first_host: None,
        }));
    }
    Ok(None)
}

/// The 64-bit FNV-1a hash of `text`.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// `RTHREADS_PORT_RANGE`, if set.
fn port_range(env: Env<'_>) -> Result<Option<(u16, u16)>, ConfigError> {
    let Some(v) = env.get("RTHREADS_PORT_RANGE") else { return Ok(None) };
    let parse = |v: &str| -> Option<(u16, u16)> {
        let (lo, hi) = v.split_once('-')?;
        let (lo, hi) = (lo.trim().parse().ok()?, hi.trim().parse().ok()?);
        (lo != 0 && lo <= hi).then_some((lo, hi))
    };
    parse(&v).map(Some).ok_or(ConfigError::PortRange(v))
}

/// The IPv4 address of network interface `name`.
fn interface_ip(name: &str) -> Result<IpAddr, ConfigError> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list` with a list we free below.
    let listed = dsm::sys::check(unsafe { libc::getifaddrs(&mut list) });
    listed.map_err(|source| ConfigError::Interfaces { name: name.to_owned(), source })?;
    let mut found = None;
    let mut p = list;
    while !p.is_null() {
        // SAFETY: `p` walks the list getifaddrs returned; each entry is valid until freeifaddrs.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let ifname = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        // SAFETY: ifa_addr points at a sockaddr whose family field is valid to read.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        if ifname.to_bytes() == name.as_bytes() && family == libc::AF_INET {
            // SAFETY: the family says this is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
            break;
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(list) };
    found.ok_or_else(|| ConfigError::NoSuchInterface(name.to_owned()))
}

/// Where a node listens.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Listen {
    /// Bind this address (port 0: any free port).
    Addr(SocketAddr),
    /// Bind the first free port of this range on this address, never the port given last
    /// (node 0's, when it lies in the range: another rank taking it would keep node 0 out).
    Range(IpAddr, u16, u16, Option<u16>),
    /// A listening socket the launcher made (`RTHREADS_LISTEN_FD`).
    Fd(i32),
}

/// The first address `text` (`host:port`) resolves to.
fn resolve(name: &'static str, value: String) -> Result<SocketAddr, ConfigError> {
    std::net::ToSocketAddrs::to_socket_addrs(&value)
        .ok()
        .and_then(|mut a| a.next())
        .ok_or(ConfigError::NotAnAddress { name, value })
}

/// Node 0's address and where node `node` listens, from `RTHREADS_COORDINATOR`,
/// `RTHREADS_BIND`, `RTHREADS_INTERFACE`, `RTHREADS_PORT_RANGE`, `RTHREADS_LISTEN_FD` and what
/// the launcher says.
///
/// # Errors
/// A setting that is not an address, a port range or an interface, or no way to know where
/// node 0 is.
pub(super) fn network(
    env: Env<'_>,
    launcher: Option<&Launcher>,
    node: NodeId,
) -> Result<(Option<SocketAddr>, Listen), ConfigError> {
    let range = port_range(env)?;
    let iface = env.get("RTHREADS_INTERFACE").map(|n| interface_ip(&n)).transpose()?;
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
    // Under a launcher with no coordinator given, node 0 listens on a port every rank derives
    // from the job's identity.
    let derived_port = launcher.map(|l| {
        // Below Linux's ephemeral ports (32768 and up): a port in that range can be taken by an
        // outgoing connection, even one to this very port (a TCP self-connect).
        let (lo, hi) = range.unwrap_or((20000, 32767));
        lo + (fnv(&l.job) % (u64::from(hi - lo) + 1)) as u16
    });
    let coordinator_text = match (env.get("RTHREADS_COORDINATOR"), launcher) {
        (Some(v), _) => Some(v),
        (None, Some(l)) if l.single_host => Some(format!("127.0.0.1:{}", derived_port.unwrap_or(0))),
        (None, Some(l)) => match &l.first_host {
            Some(h) => Some(format!("{h}:{}", derived_port.unwrap_or(0))),
            None => return Err(ConfigError::CoordinatorUnknown(l.source)),
        },
        (None, None) => None,
    };
    let coordinator = match coordinator_text {
        Some(v) => Some(resolve("RTHREADS_COORDINATOR", v)?),
        None if node != NodeId(0) => return Err(ConfigError::NoCoordinator),
        None => None,
    };
    let listen = if let Some(fd) = env.get("RTHREADS_LISTEN_FD").filter(|_| node == NodeId(0)) {
        Listen::Fd(fd.parse().map_err(|_| ConfigError::ListenFd(fd))?)
    } else if let Some(v) = env.get("RTHREADS_BIND") {
        Listen::Addr(resolve("RTHREADS_BIND", v)?)
    } else {
        // One host (the coordinator is on loopback): stay on loopback; else every interface.
        let local = coordinator.is_none_or(|c| c.ip().is_loopback());
        let ip = iface.unwrap_or(if local { loopback } else { any });
        match (node.0, coordinator) {
            // Node 0 listens where every rank expects it.
            (0, Some(c)) => Listen::Addr(SocketAddr::new(ip, c.port())),
            _ => match range {
                Some((lo, hi)) => Listen::Range(ip, lo, hi, coordinator.map(|c| c.port())),
                None => Listen::Addr(SocketAddr::new(ip, 0)),
            },
        }
    };
    Ok((coordinator, listen))
}

/// Binds this node's listener.
///
/// # Errors
/// The address is taken or not this host's, no port of the range is free, or the inherited
/// descriptor is not a listening socket.
pub(super) fn bind(listen: &Listen) -> Result<TcpListener, StartError> {
    let listener = bind_only(listen)?;
    // std listens with a backlog of 128: when hundreds of nodes reach node 0 (or one another) at
    // once, the connections past it are dropped and retried a second or more later by the kernel,
    // which made start-up at 256 nodes take 6 s in one run and 20 s in the next. Ask for the
    // largest queue the system allows (`net.core.somaxconn` caps it).
    // SAFETY: listen(2) on a socket this process owns, already listening: it only resizes the queue.
    unsafe { libc::listen(std::os::fd::AsRawFd::as_raw_fd(&listener), 4096) };
    Ok(listener)
}

/// Binds (or adopts) the listening socket `listen` names.
fn bind_only(listen: &Listen) -> Result<TcpListener, StartError> {
    match *listen {
        Listen::Addr(addr) => TcpListener::bind(addr).map_err(|source| StartError::Listen { addr, source }),
        Listen::Range(ip, lo, hi, skip) => (lo..=hi)
            .filter(|&p| Some(p) != skip)
            .find_map(|p| TcpListener::bind(SocketAddr::new(ip, p)).ok())
            .ok_or(StartError::NoFreePort { ip, lo, hi }),
        Listen::Fd(fd) => {
            // SAFETY: the launcher handed us this descriptor as a listening socket we now own.
            let l = unsafe { <TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
            // The programs this node starts must not inherit it.
            // SAFETY: fcntl on a descriptor we own.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            l.local_addr().map_err(|source| StartError::NotAListener { fd, source })?;
            Ok(l)
        }
    }
}

/// Turns address randomisation off for this process and re-executes it, unless already off.
///
/// # Errors
/// The personality cannot be set, or the re-exec failed or did not take.
pub(super) fn ensure_fixed_layout() -> Result<(), StartError> {
    // SAFETY: querying the personality has no side effects.
    let persona = unsafe { libc::personality(0xffff_ffff) };
    if persona >= 0 && persona & libc::ADDR_NO_RANDOMIZE != 0 {
        return Ok(());
    }
    if Env::process().get("RTHREADS_REEXEC").is_some() {
        return Err(StartError::StillRandomised);
    }
    // SAFETY: setting the personality affects only this process and the programs it executes.
    let set = unsafe { libc::personality((persona.max(0) | libc::ADDR_NO_RANDOMIZE) as libc::c_ulong) };
    dsm::sys::check(set).map_err(StartError::io("personality(ADDR_NO_RANDOMIZE)"))?;
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_default();
    let err = Command::new("/proc/self/exe").arg0(arg0).args(args).env("RTHREADS_REEXEC", "1").exec();
    Err(StartError::io("re-executing /proc/self/exe")(err))
}

/// What identifies this program: the executable's contents and where it is loaded.
///
/// The contents are named by the linker's build id (a hash of the linked file that the linker
/// writes into a note of it: GNU ld and gold as most Linux distributions configure gcc, and lld
/// when asked) where the program has one: reading it costs nothing, where reading and hashing a
/// 20 MB executable took node 0 about half of a 4-node start-up (≈ 10 ms of 19). A program without
/// one is hashed ([`file_hash`]). A build id survives edits that do not relink (`objcopy`,
/// `patchelf`); the length and the load address are checked too, which catch most of those.
///
/// A node that node 0 of an embedded cluster started runs `/proc/self/exe` of node 0, the very
/// same file, so node 0 passes its identity on (`RTHREADS_BINARY_HASH`) and such a node only
/// checks the length: hashing tens of megabytes in every one of hundreds of processes starting on
/// a few CPUs was seconds of start-up. Any other node (another host, or started by hand) reads its
/// own build id, or hashes the file where there is none.
fn binary_id() -> Result<BinaryId, StartError> {
    let anchor = binary_id as *const () as usize as u64;
    let len = std::fs::metadata("/proc/self/exe").map_err(StartError::io("reading /proc/self/exe"))?.len();
    let inherited = std::env::var("RTHREADS_BINARY_HASH").ok().and_then(|v| {
        let (hash, of_len) = v.split_once(':')?;
        Some((u64::from_str_radix(hash, 16).ok()?, of_len.parse::<u64>().ok()?))
    });
    if let Some((hash, _)) = inherited.filter(|&(_, of_len)| of_len == len) {
        return Ok(BinaryId { hash, len, anchor });
    }
    // Hashed once per process (node 0 needs it for its hello and for the nodes it starts).
    static HASHED: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let (hash, len) = match HASHED.get() {
        Some(&h) => h,
        None => {
            let h = match build_id_hash() {
                Some(h) => (h, len),
                None => file_hash("/proc/self/exe").map_err(StartError::io("reading /proc/self/exe"))?,
            };
            *HASHED.get_or_init(|| h)
        }
    };
    Ok(BinaryId { hash, len, anchor })
}

/// The value of `RTHREADS_BINARY_HASH` for the nodes this node starts: this program's hash and
/// length (computed once, on first use).
pub(super) fn binary_hash_setting() -> Result<String, StartError> {
    let id = binary_id()?;
    Ok(format!("{:016x}:{}", id.hash, id.len))
}

/// The main program's GNU build id (`NT_GNU_BUILD_ID` note in a `PT_NOTE` segment), folded
/// into 64 bits; `None` if it has none.
fn build_id_hash() -> Option<u64> {
    /// Called by `dl_iterate_phdr` for each loaded object; the first is the main program.
    extern "C" fn first(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        out: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the C library passes a valid `dl_phdr_info` for the duration of the call, and
        // `out` is the `Option<u64>` `build_id_hash` passed in.
        let (info, out) = unsafe { (&*info, &mut *out.cast::<Option<u64>>()) };
        if info.dlpi_phdr.is_null() {
            return 1;
        }
        // SAFETY: a non-null `dlpi_phdr` points to `dlpi_phnum` program headers of a loaded object.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        // Only a note inside a loaded (so mapped) segment is read.
        let loaded = |ph: &libc::Elf64_Phdr| {
            phdrs.iter().any(|l| {
                l.p_type == libc::PT_LOAD
                    && l.p_vaddr <= ph.p_vaddr
                    && ph.p_vaddr.checked_add(ph.p_memsz).is_some_and(|end| end <= l.p_vaddr + l.p_memsz)
            })
        };
        for ph in phdrs.iter().filter(|p| p.p_type == libc::PT_NOTE && loaded(p)) {
            let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize);
            // SAFETY: the note segment lies inside a loaded segment of the program, which is
            // mapped readable for its whole `p_memsz` while the program runs.
            let notes = unsafe { std::slice::from_raw_parts(start as *const u8, ph.p_memsz as usize) };
            if let Some(id) = gnu_build_id(notes, ph.p_align as usize) {
                *out = Some(id.chunks(8).fold(0xcbf2_9ce4_8422_2325u64, |h, c| {
                    let mut w = [0u8; 8];
                    w[..c.len()].copy_from_slice(c);
                    (h ^ u64::from_le_bytes(w)).wrapping_mul(0x0000_0100_0000_01b3).rotate_left(29)
                }));
                break;
            }
        }
        1 // The main program only.
    }
    let mut out: Option<u64> = None;
    // SAFETY: `first` matches the callback type and only reads what the C library passes it.
    unsafe { libc::dl_iterate_phdr(Some(first), (&raw mut out).cast()) };
    out
}

/// The descriptor of the `NT_GNU_BUILD_ID` note among `notes` (the contents of a note segment
/// aligned to `align` bytes: name size, descriptor size and type as 4-byte words, then the name and
/// the descriptor; the descriptor starts, and the next note after it, at the next multiple of 4
/// from the note's start, or of 8 in a segment aligned to 8), if there is one.
fn gnu_build_id(mut notes: &[u8], align: usize) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let pad = if align == 8 { 8 } else { 4 };
    let word =
        |b: &[u8], i: usize| b.get(i..i + 4).map(|w| u32::from_ne_bytes(w.try_into().expect("4 bytes")));
    while notes.len() >= 12 {
        let (name_len, desc_len, kind) =
            (word(notes, 0)? as usize, word(notes, 4)? as usize, word(notes, 8)?);
        let name_end = name_len.checked_add(12)?.checked_next_multiple_of(pad)?;
        let desc_end = name_end.checked_add(desc_len)?.checked_next_multiple_of(pad)?;
        let name = notes.get(12..name_len.checked_add(12)?)?;
        let desc = notes.get(name_end..name_end.checked_add(desc_len)?)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" && !desc.is_empty() {
            return Some(desc);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

/// A 64-bit hash of a file's contents and its length, read a megabyte at a time: four independent
/// lanes of a multiply–xor–shift step over 8-byte words (so the multiplications overlap), combined
/// at the end with the bytes past the last 32-byte block.
fn file_hash(path: &str) -> std::io::Result<(u64, u64)> {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut lanes =
        [0xcbf2_9ce4_8422_2325u64, 0x9e37_79b9_7f4a_7c15, 0xc2b2_ae3d_27d4_eb4f, 0x1656_67b1_9e37_79f9];
    let mut len = 0u64;
    loop {
        // Fill the buffer (a short read is not the end), so every block but the last is whole.
        let mut n = 0;
        while n < buf.len() {
            match std::io::Read::read(&mut f, &mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        len += n as u64;
        let whole = n / 32 * 32;
        for block in buf[..whole].chunks_exact(32) {
            for (lane, word) in lanes.iter_mut().zip(block.chunks_exact(8)) {
                *lane = (*lane ^ u64::from_le_bytes(word.try_into().expect("8 bytes"))).wrapping_mul(PRIME);
                *lane ^= *lane >> 29;
            }
        }
        if n < buf.len() {
            let hash = lanes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &l| (h ^ l).wrapping_mul(PRIME));
            let hash = buf[whole..n].iter().fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
            return Ok((hash, len));
        }
    }
}

/// Joins the mesh of every node, listening on `listener`, with a shared space of `space` bytes
/// (the hello's settings every node must share). Returns once connected to every node.
///
/// # Errors
/// This program cannot be read, or the mesh does not form (see `net::mesh`).
pub(super) fn join(cfg: &Config, listener: TcpListener, space: usize) -> Result<Mesh, StartError> {
    let parallelism = std::thread::available_parallelism().map_or(1, |p| p.get() as u32);
    let hello = Hello {
        node: cfg.node,
        nodes: cfg.nodes,
        session: cfg.session,
        binary: binary_id()?,
        listen: String::new(),
        parallelism,
        settings: format!("protocol={} space={space}", if cfg.lrc { "lrc" } else { "sc" }),
    };
    Ok(net::mesh::establish(MeshConfig {
        hello,
        listener,
        coordinator: cfg.coordinator,
        timeout: cfg.timeout,
        secret: cfg.secret.clone(),
        // Lazy unless `RTHREADS_CONNECT=eager`: the eager mesh costs n (n - 1) / 2 authenticated
        // connections before `main` runs, and lazy start-up measured faster at every size from 4
        // nodes up (BENCHMARKS.md); at 2 nodes the two are the same.
        lazy: cfg.connect_lazily.unwrap_or(true),
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_id_is_read_where_there_is_one_and_notes_parse() {
        // The linkers of most Linux distributions write a build id by default (Debian's do); a
        // program without one falls back to hashing its file.
        let id = binary_id().unwrap();
        if let Some(h) = build_id_hash() {
            assert_eq!(id.hash, h, "the build id names the program");
        }
        // Two notes: an ABI tag, then a build id of 4 bytes.
        let mut notes = Vec::new();
        for (name, desc, kind) in
            [(&b"GNU\0"[..], &[0u8, 0, 0, 0, 3, 0, 0, 0][..], 1u32), (b"GNU\0", &[9, 8, 7, 6], 3)]
        {
            notes.extend((name.len() as u32).to_ne_bytes());
            notes.extend((desc.len() as u32).to_ne_bytes());
            notes.extend(kind.to_ne_bytes());
            notes.extend(name);
            notes.extend(desc);
        }
        assert_eq!(gnu_build_id(&notes, 4), Some(&[9u8, 8, 7, 6][..]));
        assert_eq!(gnu_build_id(&notes[..notes.len() - 1], 4), None, "a cut note is not read past its end");
        assert_eq!(gnu_build_id(&[], 4), None);
        let huge = [u32::MAX.to_ne_bytes(), 4u32.to_ne_bytes(), 3u32.to_ne_bytes()].concat();
        assert_eq!(gnu_build_id(&huge, 4), None, "sizes past the segment are refused, not wrapped");
        // A segment aligned to 8 (as `.note.gnu.property` is): a descriptor starts at the next
        // multiple of 8 from its note's start (16 after a 4-byte name), and so does the next note.
        let mut notes = Vec::new();
        for (desc, kind) in [(&[7u8; 12][..], 5u32), (&[1, 2, 3, 4, 5], 3)] {
            notes.extend(4u32.to_ne_bytes());
            notes.extend((desc.len() as u32).to_ne_bytes());
            notes.extend(kind.to_ne_bytes());
            notes.extend(b"GNU\0");
            notes.extend(desc);
            notes.resize(notes.len().next_multiple_of(8), 0);
        }
        assert_eq!(notes.len(), 56);
        assert_eq!(gnu_build_id(&notes, 8), Some(&[1u8, 2, 3, 4, 5][..]));
    }

    #[test]
    fn the_file_hash_sees_every_byte_and_the_length() {
        let path = std::env::temp_dir().join(format!("rthreads-hash-{}", std::process::id()));
        let write_hash = |bytes: &[u8]| {
            std::fs::write(&path, bytes).unwrap();
            file_hash(path.to_str().unwrap()).unwrap()
        };
        let mut bytes: Vec<u8> = (0..(1usize << 20) + 37).map(|i| (i * 7 % 251) as u8).collect();
        let (hash, len) = write_hash(&bytes);
        assert_eq!(len, bytes.len() as u64);
        assert_eq!(write_hash(&bytes), (hash, len), "the same bytes, the same hash");
        // One byte changed anywhere (a lane of the first block, the last word before the first
        // megabyte ends, the tail past the last whole block) changes the hash.
        for at in [0, 9, (1 << 20) - 1, (1 << 20) + 36] {
            bytes[at] ^= 1;
            assert_ne!(write_hash(&bytes).0, hash, "byte {at}");
            bytes[at] ^= 1;
        }
        bytes.push(0);
        assert_ne!(write_hash(&bytes), (hash, len), "a longer file");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn first_host_of_slurm_host_lists() {
        assert_eq!(first_slurm_host("node[03-05,9],gpu1").as_deref(), Some("node03"));
        assert_eq!(first_slurm_host("a1,a2").as_deref(), Some("a1"));
        assert_eq!(first_slurm_host("c[7,2]-ib").as_deref(), Some("c7-ib"));
        assert_eq!(first_slurm_host("solo").as_deref(), Some("solo"));
        assert_eq!(first_slurm_host(""), None);
        assert_eq!(first_slurm_host("bad[1-"), None);
    }

    #[test]
    fn job_hashes() {
        assert_eq!(fnv("ompi-1"), fnv("ompi-1"));
        assert_ne!(fnv("ompi-1"), fnv("ompi-2"));
    }

    #[test]
    fn a_port_range_never_hands_out_node_0s_port() {
        let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let p = TcpListener::bind((ip, 0)).unwrap().local_addr().unwrap().port();
        let e = bind(&Listen::Range(ip, p, p, Some(p))).unwrap_err();
        assert!(matches!(e, StartError::NoFreePort { lo, hi, .. } if lo == p && hi == p), "{e:?}");
        let l = bind(&Listen::Range(ip, p, p, None)).unwrap();
        assert_eq!(l.local_addr().unwrap().port(), p);
        // The port is taken now.
        let taken = SocketAddr::new(ip, p);
        assert!(matches!(bind(&Listen::Addr(taken)), Err(StartError::Listen { addr, .. }) if addr == taken));
    }
}
