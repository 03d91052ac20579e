//! Tests of the release-consistent protocol, driven through an in-memory cluster.
//!
//! The cluster plays the runtime: per ordered pair of nodes a FIFO link (links of different pairs
//! interleave freely), per node and page real bytes, a twin and a protection entry, and simulated
//! application threads that read and write bytes only when the protection allows, acquire and
//! release around critical sections of locks modelled here, and do read-modify-writes on
//! sequentially consistent pages. Diffs are computed and applied with [`diff`], exactly as the
//! runtime would.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{
    Access, Action, FaultKind, LrcConfig, LrcNode, MAX_PREFETCH, Msg, NodeId, PageId, Payload, ReleaseId,
    Sharing, diff,
};
use crate::protocol::sc;

const READ: FaultKind = FaultKind::Read;
const WRITE: FaultKind = FaultKind::Write;
/// Bytes per simulated page: small, so that tests run fast and pages are shared a lot.
const PAGE: usize = 32;
/// What a node's memory holds for a page it never received.
const POISON: u8 = 0xEE;

fn n(i: u16) -> NodeId {
    NodeId(i)
}

fn p(i: u64) -> PageId {
    PageId(i)
}

/// xorshift64: small, deterministic, good enough to shuffle schedules.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound.max(1) as u64) as usize
    }

    fn percent(&mut self, chance: u64) -> bool {
        self.next_u64() % 100 < chance
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// What a simulated program does with one byte of the space. The program is data-race-free:
/// every byte is either read-only, written by one node only, guarded by one lock, or on a
/// sequentially consistent page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Guard {
    /// Written by its home before anyone else touches the page, then only read.
    ReadOnly,
    /// Read and written only by threads holding this lock.
    Lock(usize),
    /// Read and written only by threads of this node, without synchronisation.
    Private(usize),
    /// A counter on an SC page, incremented by read-modify-writes of any node.
    Counter,
    /// How many times this node has published (written only by it, read by anyone after
    /// reading the node's flag).
    Data(usize),
    /// On an SC page: how many times this node has published, incremented after its data.
    Flag(usize),
}

/// One step of a simulated thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    Lock(usize),
    Unlock(usize),
    Read(usize, usize),
    Write(usize, usize),
    /// Increment a byte of an SC page while holding it writable (an atomic read-modify-write).
    Rmw(usize, usize),
    /// Write the next value of this node's `Data` byte.
    WriteData(usize),
    /// Increment this node's `Flag`.
    RaiseFlag(usize),
    /// Read node `j`'s flag into the thread's register.
    ReadFlag(usize),
    /// Read node `j`'s data: it must be at least the flag value read before.
    ReadData(usize),
    Acquire,
    Release,
    SetSc(usize),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    Run,
    Fault(PageId),
    Release(ReleaseId, Option<usize>),
}

#[derive(Clone, Debug)]
struct Thread {
    steps: VecDeque<Step>,
    wait: Wait,
    /// The last flag value read.
    seen: u8,
}

impl Thread {
    fn idle(&self) -> bool {
        self.steps.is_empty() && self.wait == Wait::Run
    }
}

/// A message on a link, with its payload bytes.
#[derive(Clone, Debug)]
struct Packet {
    msg: Msg,
    payload: Option<Vec<u8>>,
}

fn kind_name(msg: &Msg) -> &'static str {
    match msg {
        Msg::Fetch { .. } => "Fetch",
        Msg::Page { .. } => "Page",
        Msg::ScPage { .. } => "ScPage",
        Msg::Diff { .. } => "Diff",
        Msg::DiffAck { .. } => "DiffAck",
        Msg::Notice { .. } => "Notice",
        Msg::NoticeAck { .. } => "NoticeAck",
        Msg::MakeSc { .. } => "MakeSc",
        Msg::Convert { .. } => "Convert",
        Msg::ConvertAck { .. } => "ConvertAck",
        Msg::Sc(m) if m.carries_data() => "ScData",
        Msg::Sc(_) => "ScControl",
    }
}

/// A write: `(page, byte, stamp)`.
type Stamped = (usize, usize, u64);

struct Cluster {
    nodes: Vec<LrcNode>,
    /// `links[from * n + to]`, FIFO.
    links: Vec<VecDeque<Packet>>,
    /// `mem[node][page]`: the page's bytes on that node.
    mem: Vec<Vec<Vec<u8>>>,
    twins: Vec<Vec<Option<Vec<u8>>>>,
    /// `prot[node][page]`: the protection, driven by `Protect` actions only.
    prot: Vec<Vec<Access>>,
    released: Vec<BTreeSet<ReleaseId>>,
    threads: Vec<Vec<Thread>>,
    /// The program: what each byte is.
    guard: Vec<Vec<Guard>>,
    /// `guarded[lock]`: the bytes it guards.
    guarded: Vec<Vec<(usize, usize)>>,
    /// `private[node]`: its private bytes.
    private: Vec<Vec<(usize, usize)>>,
    read_only: Vec<(usize, usize)>,
    counters: Vec<(usize, usize)>,
    /// Where node `k`'s `Data` and `Flag` bytes are.
    data: Vec<Option<(usize, usize)>>,
    flag: Vec<Option<(usize, usize)>>,
    mixed_pages: Vec<usize>,
    locks: Vec<Option<(usize, usize)>>,
    /// The value of the latest write of every byte the program reads back exactly.
    shadow: Vec<Vec<u8>>,
    next_value: u8,
    /// Messages sent, by kind.
    sent: BTreeMap<&'static str, usize>,
    /// `received_pages[node][page]`: copies of the page installed there.
    received_pages: Vec<Vec<usize>>,
    steps_done: u64,
    checks: u64,
    /// Per byte: the stamp of its latest write, its writer, and whether a release of that write
    /// has completed.
    last: Vec<Vec<(u64, Option<usize>, bool)>>,
    /// Per node: writes since its last `release` call.
    unreleased: Vec<Vec<Stamped>>,
    /// Writes each release call covers, until its `Released`.
    releasing: BTreeMap<(usize, ReleaseId), Vec<Stamped>>,
    stamp: u64,
    /// How likely each link is to be picked when several hold messages: random schedules make
    /// some links much slower than others, so that messages on different links overtake each
    /// other by long stretches.
    speed: Vec<u64>,
}

impl Cluster {
    /// `nodes` nodes, `per_node` pages homed at each; `guard(page, byte)` gives the program.
    /// Pages with any `Counter` or `Flag` byte are sequentially consistent from the start.
    fn new(nodes: u16, per_node: u64, prefetch: u16, guard: impl Fn(usize, usize) -> Guard) -> Self {
        let count = usize::from(nodes);
        let pages = (u64::from(nodes) * per_node) as usize;
        let guard: Vec<Vec<Guard>> = (0..pages).map(|pg| (0..PAGE).map(|b| guard(pg, b)).collect()).collect();
        let sc_pages: Vec<std::ops::Range<u64>> = (0..pages)
            .filter(|&pg| guard[pg].iter().any(|g| matches!(g, Guard::Counter | Guard::Flag(_))))
            .map(|pg| pg as u64..pg as u64 + 1)
            .collect();
        let config = LrcConfig { prefetch, sc_pages };
        let states: Vec<LrcNode> =
            (0..nodes).map(|i| LrcNode::new(n(i), nodes, per_node, config.clone())).collect();
        let mut mem = vec![vec![vec![POISON; PAGE]; pages]; count];
        let mut prot = vec![vec![Access::None; pages]; count];
        let mut shadow = vec![vec![0u8; PAGE]; pages];
        let mut locks = 0;
        let mut guarded: Vec<Vec<(usize, usize)>> = Vec::new();
        let mut private = vec![Vec::new(); count];
        let mut read_only = Vec::new();
        let mut counters = Vec::new();
        let mut data = vec![None; count];
        let mut flag = vec![None; count];
        let mut mixed_pages = BTreeSet::new();
        for pg in 0..pages {
            let home = states[0].home_of(p(pg as u64)).index();
            prot[home][pg] = Access::Write;
            for b in 0..PAGE {
                // The home writes the initial values before anyone else can see the page.
                let init = match guard[pg][b] {
                    Guard::ReadOnly => (pg * 31 + b * 7) as u8 | 1,
                    _ => 0,
                };
                mem[home][pg][b] = init;
                shadow[pg][b] = init;
                match guard[pg][b] {
                    Guard::ReadOnly => read_only.push((pg, b)),
                    Guard::Lock(l) => {
                        locks = locks.max(l + 1);
                        guarded.resize(locks, Vec::new());
                        guarded[l].push((pg, b));
                        mixed_pages.insert(pg);
                    }
                    Guard::Private(k) => {
                        private[k].push((pg, b));
                        mixed_pages.insert(pg);
                    }
                    Guard::Counter => counters.push((pg, b)),
                    Guard::Data(k) => data[k] = Some((pg, b)),
                    Guard::Flag(k) => flag[k] = Some((pg, b)),
                }
            }
        }
        Cluster {
            nodes: states,
            links: vec![VecDeque::new(); count * count],
            mem,
            twins: vec![vec![None; pages]; count],
            prot,
            released: vec![BTreeSet::new(); count],
            threads: vec![vec![Thread { steps: VecDeque::new(), wait: Wait::Run, seen: 0 }]; count],
            guard,
            guarded,
            private,
            read_only,
            counters,
            data,
            flag,
            mixed_pages: mixed_pages.into_iter().collect(),
            locks: vec![None; locks],
            shadow,
            next_value: 0,
            sent: BTreeMap::new(),
            received_pages: vec![vec![0; pages]; count],
            steps_done: 0,
            checks: 0,
            speed: vec![1; count * count],
            last: vec![vec![(0, None, true); PAGE]; pages],
            unreleased: vec![Vec::new(); count],
            releasing: BTreeMap::new(),
            stamp: 0,
        }
    }

    fn with_threads(mut self, per_node: usize) -> Self {
        let idle = Thread { steps: VecDeque::new(), wait: Wait::Run, seen: 0 };
        self.threads = vec![vec![idle; per_node]; self.count()];
        self
    }

    fn count(&self) -> usize {
        self.nodes.len()
    }

    fn pages(&self) -> usize {
        self.shadow.len()
    }

    fn home(&self, pg: usize) -> usize {
        self.nodes[0].home_of(p(pg as u64)).index()
    }

    fn link(&self, from: usize, to: usize) -> usize {
        from * self.count() + to
    }

    fn sent(&self, kind: &str) -> usize {
        self.sent.get(kind).copied().unwrap_or(0)
    }

    /// Carries out `actions` of `node` like the runtime would. `payload` came with the message
    /// being handled, if any.
    fn exec(&mut self, node: usize, actions: &[Action], payload: Option<&[u8]>) {
        for &action in actions {
            match action {
                Action::Send { to, msg } => {
                    assert_ne!(to.index(), node, "node {node} sends {msg:?} to itself");
                    assert!(to.index() < self.count());
                    let pg = msg.page().0 as usize;
                    let payload = match msg.payload() {
                        Payload::None => None,
                        Payload::Page => {
                            if let Msg::Sc(_) = msg {
                                assert_ne!(
                                    self.prot[node][pg],
                                    Access::Write,
                                    "{node} sends {msg:?} while writable"
                                );
                            }
                            Some(self.mem[node][pg].clone())
                        }
                        Payload::Diff => {
                            assert_ne!(
                                self.prot[node][pg],
                                Access::Write,
                                "{node} diffs {pg} while writable"
                            );
                            let twin = self.twins[node][pg]
                                .take()
                                .unwrap_or_else(|| panic!("{node}: diff of {pg} without twin"));
                            let mut d = Vec::new();
                            diff::encode(&twin, &self.mem[node][pg], &mut d);
                            Some(d)
                        }
                    };
                    assert_eq!(msg.carries_data(), payload.is_some());
                    *self.sent.entry(kind_name(&msg)).or_default() += 1;
                    let link = self.link(node, to.index());
                    self.links[link].push_back(Packet { msg, payload });
                }
                Action::Install { page } => {
                    let pg = page.0 as usize;
                    let bytes = payload.unwrap_or_else(|| panic!("{node}: Install {pg} without payload"));
                    assert_eq!(bytes.len(), PAGE);
                    assert_eq!(self.prot[node][pg], Access::None, "{node}: Install {pg} while accessible");
                    self.mem[node][pg].copy_from_slice(bytes);
                    self.received_pages[node][pg] += 1;
                }
                Action::ApplyDiff { page } => {
                    let pg = page.0 as usize;
                    assert_eq!(self.home(pg), node, "{node}: ApplyDiff {pg} away from home");
                    let d = payload.unwrap_or_else(|| panic!("{node}: ApplyDiff {pg} without payload"));
                    if let Err(e) = diff::apply(d, &mut self.mem[node][pg]) {
                        panic!("{node}: diff of {pg}: {e}");
                    }
                }
                Action::Twin { page } => {
                    let pg = page.0 as usize;
                    assert_ne!(self.home(pg), node, "{node}: twin of its own page {pg}");
                    assert!(self.twins[node][pg].is_none(), "{node}: second twin of {pg}");
                    assert!(self.prot[node][pg] <= Access::Read, "{node}: twin of {pg} while writable");
                    self.twins[node][pg] = Some(self.mem[node][pg].clone());
                }
                Action::Protect { page, access } => self.prot[node][page.0 as usize] = access,
                Action::Wake { page } => {
                    for t in &mut self.threads[node] {
                        if t.wait == Wait::Fault(page) {
                            t.wait = Wait::Run;
                        }
                    }
                }
                Action::Released { release } => {
                    assert!(self.released[node].insert(release), "{node}: {release:?} reported twice");
                    for (pg, b, stamp) in self.releasing.remove(&(node, release)).unwrap_or_default() {
                        if self.last[pg][b].0 == stamp {
                            self.last[pg][b].2 = true;
                        }
                    }
                }
            }
        }
        for pg in 0..self.pages() {
            assert_eq!(
                self.prot[node][pg],
                self.nodes[node].access(p(pg as u64)),
                "node {node}: protection of page {pg} differs from the protocol's view"
            );
        }
    }

    fn fault(&mut self, node: usize, pg: usize, kind: FaultKind) -> Vec<Action> {
        let mut out = Vec::new();
        self.nodes[node].fault(p(pg as u64), kind, &mut out);
        assert!(
            !out.iter().any(|a| matches!(a, Action::Install { .. } | Action::ApplyDiff { .. })),
            "payload action from a fault: {out:?}"
        );
        self.exec(node, &out, None);
        out
    }

    fn acquire(&mut self, node: usize) -> Vec<Action> {
        let mut out = Vec::new();
        self.nodes[node].acquire(&mut out);
        self.exec(node, &out, None);
        self.check_acquired(node);
        out
    }

    fn release(&mut self, node: usize) -> (ReleaseId, Vec<Action>) {
        let mut out = Vec::new();
        let id = self.nodes[node].release(&mut out);
        let covered = std::mem::take(&mut self.unreleased[node]);
        self.releasing.insert((node, id), covered);
        self.exec(node, &out, None);
        (id, out)
    }

    /// Records a write of `value` to a byte by `node` (whose memory already holds it).
    fn wrote(&mut self, node: usize, pg: usize, b: usize, value: u8) {
        self.shadow[pg][b] = value;
        self.stamp += 1;
        self.last[pg][b] = (self.stamp, Some(node), false);
        self.unreleased[node].push((pg, b, self.stamp));
    }

    /// Writes a byte directly, as a thread with write access would.
    fn poke(&mut self, node: usize, pg: usize, b: usize, value: u8) {
        assert_eq!(self.prot[node][pg], Access::Write, "node {node} may not write page {pg}");
        self.mem[node][pg][b] = value;
        self.wrote(node, pg, b, value);
    }

    /// The guarantee of an acquire, on every byte whether the program reads it or not: every
    /// copy the node still holds of a release-consistent page has every write of another node
    /// whose release completed before the acquire.
    fn check_acquired(&self, node: usize) {
        for pg in 0..self.pages() {
            if self.nodes[self.home(pg)].is_sc(p(pg as u64)) || self.prot[node][pg] == Access::None {
                continue;
            }
            for b in 0..PAGE {
                let (_, writer, released) = self.last[pg][b];
                if released && writer != Some(node) {
                    assert_eq!(
                        self.mem[node][pg][b], self.shadow[pg][b],
                        "node {node} acquired but holds a stale byte {pg}:{b} written by {writer:?}"
                    );
                }
            }
        }
    }

    fn set_sc(&mut self, node: usize, pg: usize) -> Vec<Action> {
        let mut out = Vec::new();
        self.nodes[node].set_sc(p(pg as u64), &mut out);
        self.exec(node, &out, None);
        out
    }

    /// Delivers the oldest message on link `from -> to`; returns the receiver's actions.
    fn deliver(&mut self, from: usize, to: usize) -> Vec<Action> {
        let link = self.link(from, to);
        let packet = self.links[link].pop_front().unwrap_or_else(|| panic!("nothing on link {from} -> {to}"));
        let mut out = Vec::new();
        if let Some(payload) = &packet.payload
            && packet.msg.payload() == Payload::Diff
        {
            diff::validate(payload, PAGE).expect("a diff the runtime would accept");
        }
        if let Err(e) = self.nodes[to].handle(n(from as u16), packet.msg, &mut out) {
            panic!("node {to} rejected {:?} from {from}: {e}", packet.msg);
        }
        self.exec(to, &out, packet.payload.as_deref());
        out
    }

    fn busy_links(&self) -> Vec<usize> {
        (0..self.links.len()).filter(|&l| !self.links[l].is_empty()).collect()
    }

    /// A busy link, picked with the links' speeds as weights.
    fn pick_link(&self, rng: &mut Rng, busy: &[usize]) -> usize {
        let total: u64 = busy.iter().map(|&l| self.speed[l]).sum();
        let mut x = rng.next_u64() % total.max(1);
        for &l in busy {
            if x < self.speed[l] {
                return l;
            }
            x -= self.speed[l];
        }
        busy[0]
    }

    fn deliver_link(&mut self, link: usize) -> Vec<Action> {
        let count = self.count();
        self.deliver(link / count, link % count)
    }

    /// Delivers everything, oldest link first, until all links are empty.
    fn pump(&mut self) {
        let mut rounds = 0;
        while let Some(&link) = self.busy_links().first() {
            rounds += 1;
            assert!(rounds < 100_000, "messages never stop");
            self.deliver_link(link);
            self.check();
        }
    }

    /// Makes `node` able to access `pg` as `kind` needs, delivering messages as needed.
    fn obtain(&mut self, node: usize, pg: usize, kind: FaultKind) {
        for _ in 0..10 {
            if self.prot[node][pg] >= kind.needed() {
                return;
            }
            self.fault(node, pg, kind);
            self.pump();
        }
        panic!("node {node} never obtains {kind:?} access to page {pg}");
    }

    fn read(&mut self, node: usize, pg: usize, b: usize) -> u8 {
        self.obtain(node, pg, READ);
        self.mem[node][pg][b]
    }

    fn write(&mut self, node: usize, pg: usize, b: usize, value: u8) {
        self.obtain(node, pg, WRITE);
        self.poke(node, pg, b, value);
    }

    /// A release run to completion.
    fn release_sync(&mut self, node: usize) {
        let (id, _) = self.release(node);
        self.pump();
        assert!(self.released[node].contains(&id), "release {id:?} of {node} never completes");
    }

    /// The SC invariants on pages that are sequentially consistent at their home (and not
    /// becoming so): one writer and nobody else, or readers with identical bytes.
    fn check(&mut self) {
        self.checks += 1;
        for pg in 0..self.pages() {
            let home = self.home(pg);
            let page = p(pg as u64);
            let sc = self.nodes[home].is_sc(page);
            if !sc {
                for k in 0..self.count() {
                    let writable_copy = k != home && self.prot[k][pg] == Access::Write;
                    assert_eq!(
                        self.twins[k][pg].is_some(),
                        writable_copy,
                        "node {k} page {pg}: twin and access disagree"
                    );
                }
                continue;
            }
            let writers: Vec<usize> =
                (0..self.count()).filter(|&k| self.prot[k][pg] == Access::Write).collect();
            assert!(writers.len() <= 1, "SC page {pg} writable at {writers:?}");
            let readers: Vec<usize> =
                (0..self.count()).filter(|&k| self.prot[k][pg] == Access::Read).collect();
            if let [w] = writers[..] {
                assert!(readers.is_empty(), "SC page {pg} writable at {w} and readable at {readers:?}");
            }
            for pair in readers.windows(2) {
                assert_eq!(self.mem[pair[0]][pg], self.mem[pair[1]][pg], "SC page {pg}: readers disagree");
            }
        }
    }

    // ----- simulated threads -----

    /// Lets thread `t` of `node` take its next step if it can; returns whether it did anything.
    fn step(&mut self, node: usize, t: usize) -> bool {
        match self.threads[node][t].wait {
            Wait::Fault(_) => return false,
            Wait::Release(id, lock) => {
                if !self.released[node].contains(&id) {
                    return false;
                }
                if let Some(l) = lock {
                    self.locks[l] = None;
                }
                self.threads[node][t].wait = Wait::Run;
                return true;
            }
            Wait::Run => {}
        }
        let Some(&step) = self.threads[node][t].steps.front() else {
            return false;
        };
        let done = match step {
            Step::Lock(l) => {
                if self.locks[l].is_some() {
                    return false;
                }
                self.locks[l] = Some((node, t));
                self.acquire(node);
                true
            }
            Step::Unlock(l) => {
                assert_eq!(self.locks[l], Some((node, t)));
                let (id, _) = self.release(node);
                self.threads[node][t].wait = Wait::Release(id, Some(l));
                true
            }
            Step::Release => {
                let (id, _) = self.release(node);
                self.threads[node][t].wait = Wait::Release(id, None);
                true
            }
            Step::Acquire => {
                self.acquire(node);
                true
            }
            Step::SetSc(pg) => {
                self.set_sc(node, pg);
                true
            }
            Step::Read(pg, b) => self.access(node, t, pg, READ, |c, node, _| {
                let value = c.mem[node][pg][b];
                assert_eq!(value, c.shadow[pg][b], "node {node} reads {:?} byte {pg}:{b}", c.guard[pg][b]);
            }),
            Step::Write(pg, b) => self.access(node, t, pg, WRITE, |c, node, _| {
                c.next_value = c.next_value.wrapping_add(1);
                c.poke(node, pg, b, c.next_value);
            }),
            Step::Rmw(pg, b) => self.access(node, t, pg, WRITE, |c, node, _| {
                c.poke(node, pg, b, c.mem[node][pg][b].wrapping_add(1));
            }),
            Step::WriteData(k) => {
                let (pg, b) = self.data[k].expect("data byte");
                self.access(node, t, pg, WRITE, |c, node, _| c.poke(node, pg, b, c.mem[node][pg][b] + 1))
            }
            Step::RaiseFlag(k) => {
                let (pg, b) = self.flag[k].expect("flag byte");
                self.access(node, t, pg, WRITE, |c, node, _| c.poke(node, pg, b, c.mem[node][pg][b] + 1))
            }
            Step::ReadFlag(j) => {
                let (pg, b) = self.flag[j].expect("flag byte");
                self.access(node, t, pg, READ, |c, node, t| c.threads[node][t].seen = c.mem[node][pg][b])
            }
            Step::ReadData(j) => {
                let (pg, b) = self.data[j].expect("data byte");
                self.access(node, t, pg, READ, |c, node, t| {
                    let seen = c.threads[node][t].seen;
                    let value = c.mem[node][pg][b];
                    assert!(value >= seen, "node {node} saw flag {seen} of node {j} but data {value}");
                })
            }
        };
        if done {
            self.threads[node][t].steps.pop_front();
        }
        self.steps_done += 1;
        true
    }

    /// Performs `body` if the protection allows `kind`, else faults and makes the thread wait.
    fn access(
        &mut self,
        node: usize,
        t: usize,
        pg: usize,
        kind: FaultKind,
        body: impl FnOnce(&mut Self, usize, usize),
    ) -> bool {
        if self.prot[node][pg] >= kind.needed() {
            body(self, node, t);
            return true;
        }
        // Waiting before faulting: the `Wake` may come with the fault's own actions.
        self.threads[node][t].wait = Wait::Fault(p(pg as u64));
        self.fault(node, pg, kind);
        false
    }

    /// A random task for thread `t` of `node`, from what the program has.
    fn new_task(&mut self, rng: &mut Rng, node: usize, t: usize, set_sc_chance: u64) {
        let mut steps = VecDeque::new();
        let ops = 1 + rng.below(5);
        let rw = |rng: &mut Rng, (pg, b): (usize, usize)| {
            if rng.percent(50) { Step::Read(pg, b) } else { Step::Write(pg, b) }
        };
        match rng.below(10) {
            0..=3 if !self.guarded.is_empty() => {
                let l = rng.below(self.guarded.len());
                steps.push_back(Step::Lock(l));
                for _ in 0..ops {
                    let byte = rng.pick(&self.guarded[l]);
                    steps.push_back(rw(rng, byte));
                }
                steps.push_back(Step::Unlock(l));
            }
            4 if !self.private[node].is_empty() => {
                for _ in 0..ops {
                    let byte = rng.pick(&self.private[node]);
                    steps.push_back(rw(rng, byte));
                }
            }
            5 if !self.read_only.is_empty() => {
                for _ in 0..ops {
                    let (pg, b) = rng.pick(&self.read_only);
                    steps.push_back(Step::Read(pg, b));
                }
            }
            6 if !self.counters.is_empty() => {
                for _ in 0..ops {
                    let (pg, b) = rng.pick(&self.counters);
                    steps.push_back(Step::Rmw(pg, b));
                }
            }
            7 if self.flag[node].is_some() => {
                let (pg, b) = self.data[node].expect("data byte");
                // One thread per node publishes, so that data and flag rise in step.
                if t == 0 && self.shadow[pg][b] < 200 {
                    steps.push_back(Step::WriteData(node));
                    steps.push_back(Step::RaiseFlag(node));
                } else {
                    let j = rng.below(self.count());
                    steps.push_back(Step::ReadFlag(j));
                    steps.push_back(Step::ReadData(j));
                }
            }
            8..=9 if set_sc_chance > 0 && rng.percent(set_sc_chance) && !self.mixed_pages.is_empty() => {
                steps.push_back(Step::SetSc(rng.pick(&self.mixed_pages)));
            }
            _ => steps.push_back(if rng.percent(50) { Step::Acquire } else { Step::Release }),
        }
        self.threads[node][t].steps = steps;
    }

    /// Random steps and random deliveries; then drains and checks the final memory.
    fn run(&mut self, rng: &mut Rng, steps: usize, set_sc_chance: u64) {
        let deliver_bias = 30 + rng.below(40) as u64;
        let threads = self.threads[0].len();
        for speed in &mut self.speed {
            *speed = [1, 1, 20, 400][rng.below(4)];
        }
        for _ in 0..steps {
            let busy = self.busy_links();
            if !busy.is_empty() && rng.percent(deliver_bias) {
                let link = self.pick_link(rng, &busy);
                self.deliver_link(link);
            } else {
                let node = rng.below(self.count());
                let t = rng.below(threads);
                if self.threads[node][t].idle() {
                    self.new_task(rng, node, t, set_sc_chance);
                }
                self.step(node, t);
            }
            self.check();
        }
        self.drain(rng);
        self.final_check();
    }

    /// No new tasks: deliveries and steps until every thread has finished its task.
    fn drain(&mut self, rng: &mut Rng) {
        let threads = self.threads[0].len();
        let mut idle_rounds = 0;
        for _ in 0..200_000 {
            let busy = self.busy_links();
            let all_idle = self.threads.iter().flatten().all(Thread::idle);
            if busy.is_empty() && all_idle {
                return;
            }
            if !busy.is_empty() && rng.percent(50) {
                let link = self.pick_link(rng, &busy);
                self.deliver_link(link);
                idle_rounds = 0;
            } else {
                let node = rng.below(self.count());
                let t = rng.below(threads);
                if self.step(node, t) {
                    idle_rounds = 0;
                } else {
                    idle_rounds += 1;
                    if busy.is_empty() && idle_rounds > 10_000 {
                        let stuck: Vec<_> = self.threads.iter().flatten().filter(|t| !t.idle()).collect();
                        panic!("no progress while draining; threads {stuck:?}");
                    }
                }
            }
            self.check();
        }
        panic!("drain never ends");
    }

    /// Every node releases, then acquires; every byte read anywhere must then be the last value
    /// written, and the homes of release-consistent pages must hold it already.
    fn final_check(&mut self) {
        for k in 0..self.count() {
            self.release_sync(k);
        }
        for k in 0..self.count() {
            self.acquire(k);
        }
        self.pump();
        for pg in 0..self.pages() {
            let home = self.home(pg);
            if !self.nodes[home].is_sc(p(pg as u64)) {
                assert_eq!(self.mem[home][pg], self.shadow[pg], "home {home} of page {pg}");
            }
        }
        for k in 0..self.count() {
            for pg in 0..self.pages() {
                for b in 0..PAGE {
                    let value = self.read(k, pg, b);
                    assert_eq!(
                        value, self.shadow[pg][b],
                        "node {k} reads {:?} byte {pg}:{b} at the end",
                        self.guard[pg][b]
                    );
                }
            }
        }
        self.pump();
        for (k, node) in self.nodes.iter().enumerate() {
            assert!(node.is_quiescent(), "node {k} is not quiescent: {node:?}");
        }
    }
}

/// Every byte of a page is one thing.
fn page_of(g: Guard) -> impl Fn(usize, usize) -> Guard {
    move |_, _| g
}

// ----- single flows, exact actions -----

#[test]
fn layout_messages_and_initial_state() {
    let node = LrcNode::new(n(1), 3, 4, LrcConfig::default().with_prefetch(1000).with_sc_pages(2..4));
    assert_eq!(node.me(), n(1));
    assert_eq!(node.nodes(), 3);
    assert_eq!(node.pages_per_node(), 4);
    assert_eq!(node.page_count(), 12);
    assert_eq!(node.config().prefetch, MAX_PREFETCH);
    assert_eq!(node.home_of(p(13)), n(2));
    assert!(node.is_sc(p(2)) && node.is_sc(p(3)) && !node.is_sc(p(4)));
    assert_eq!(node.access(p(4)), Access::Write);
    assert_eq!(node.access(p(0)), Access::None);
    assert_eq!(node.access(p(2)), Access::None);
    assert_eq!(node.access(p(12)), Access::None);
    assert_eq!(node.sharing(p(5)), Some(Sharing::Unshared));
    assert_eq!(node.sharing(p(0)), None);
    assert!(node.is_quiescent());
    assert_eq!(node.unacknowledged(), 0);

    let page = p(7);
    let all = [
        Msg::Fetch { page, count: 2 },
        Msg::Page { page },
        Msg::ScPage { page },
        Msg::Diff { page, seq: 3 },
        Msg::DiffAck { page, seq: 3 },
        Msg::Notice { page },
        Msg::NoticeAck { page },
        Msg::MakeSc { page },
        Msg::Convert { page },
        Msg::ConvertAck { page },
        Msg::Sc(sc::Msg::RecallAck { page }),
        Msg::Sc(sc::Msg::ReadReq { page }),
    ];
    let payloads: Vec<Payload> = all.iter().map(Msg::payload).collect();
    use Payload::{Diff, None as No, Page};
    assert_eq!(payloads, [No, Page, No, Diff, No, No, No, No, No, No, Page, No]);
    assert!(all.iter().all(|m| m.page() == page && m.carries_data() == (m.payload() != No)));
}

#[test]
fn read_miss_write_release() {
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    assert_eq!(c.fault(1, 0, READ), [Action::Send { to: n(0), msg: Msg::Fetch { page: p(0), count: 1 } }]);
    assert!(c.nodes[1].is_fetching(p(0)));
    // Another thread trapping meanwhile sends nothing more.
    assert_eq!(c.fault(1, 0, WRITE), []);
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Page { page: p(0) } },
        ]
    );
    assert_eq!(c.nodes[0].sharing(p(0)), Some(Sharing::Private(n(1))));
    // The write trapped while fetching: the copy arrives with its twin and write access.
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Install { page: p(0) },
            Action::Twin { page: p(0) },
            Action::Protect { page: p(0), access: Access::Write },
            Action::Wake { page: p(0) },
        ]
    );
    c.poke(1, 0, 3, 42);
    let (id, out) = c.release(1);
    assert_eq!(id, ReleaseId(0));
    assert_eq!(
        out,
        [
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(0), msg: Msg::Diff { page: p(0), seq: 0 } },
        ]
    );
    assert_eq!(c.nodes[1].unacknowledged(), 1);
    // Nobody else holds a copy: the home applies and acknowledges at once.
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::ApplyDiff { page: p(0) },
            Action::Send { to: n(1), msg: Msg::DiffAck { page: p(0), seq: 0 } }
        ]
    );
    assert_eq!(c.mem[0][0], c.shadow[0]);
    assert_eq!(c.deliver(0, 1), [Action::Released { release: ReleaseId(0) }]);
    // A later write is local again.
    assert_eq!(
        c.fault(1, 0, WRITE),
        [
            Action::Twin { page: p(0) },
            Action::Protect { page: p(0), access: Access::Write },
            Action::Wake { page: p(0) }
        ]
    );
    // A release with nothing outstanding completes at once... after the diff is acknowledged.
    let (id, _) = c.release(1);
    assert_eq!(id, ReleaseId(1));
    c.pump();
    assert!(c.released[1].contains(&id));
    let (id, out) = c.release(1);
    assert_eq!(out, [Action::Released { release: id }]);
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
}

#[test]
fn write_notices_and_acquire() {
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    c.read(1, 0, 0);
    c.read(2, 0, 0);
    assert_eq!(c.nodes[0].sharing(p(0)), Some(Sharing::Shared([n(1), n(2)].into())));
    c.write(1, 0, 5, 9);
    let (id, _) = c.release(1);
    // The home applies the diff and notifies node 2; node 1's own copy stays current.
    assert_eq!(
        c.deliver(1, 0),
        [Action::ApplyDiff { page: p(0) }, Action::Send { to: n(2), msg: Msg::Notice { page: p(0) } }]
    );
    assert_eq!(c.nodes[0].sharing(p(0)), Some(Sharing::Private(n(1))));
    // The release is not complete before node 2 has recorded the notice.
    assert!(c.busy_links() == [c.link(0, 2)]);
    assert_eq!(c.deliver(0, 2), [Action::Send { to: n(0), msg: Msg::NoticeAck { page: p(0) } }]);
    assert!(c.nodes[2].is_stale(p(0)));
    // Node 2 may still read its old copy until it acquires.
    assert_eq!(c.prot[2][0], Access::Read);
    assert_eq!(c.mem[2][0][5], 0);
    assert_eq!(c.deliver(2, 0), [Action::Send { to: n(1), msg: Msg::DiffAck { page: p(0), seq: 0 } }]);
    assert_eq!(c.deliver(0, 1), [Action::Released { release: id }]);
    // Node 1's acquire keeps its copy (nobody else wrote); node 2's drops it.
    assert_eq!(c.acquire(1), []);
    assert_eq!(c.acquire(2), [Action::Protect { page: p(0), access: Access::None }]);
    assert_eq!(c.read(2, 0, 5), 9);
    assert_eq!(c.nodes[0].sharing(p(0)), Some(Sharing::Shared([n(1), n(2)].into())));
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
}

#[test]
fn home_writes_are_noticed() {
    let mut c = Cluster::new(2, 1, 0, page_of(Guard::Lock(0)));
    // Before anyone fetched the page, the home writes freely and releases instantly.
    assert_eq!(c.prot[0][0], Access::Write);
    let (id, out) = c.release(0);
    assert_eq!(out, [Action::Released { release: id }]);
    c.read(1, 0, 0);
    assert_eq!(c.prot[0][0], Access::Read);
    // Now the home's first write traps, locally, and its release notifies the reader.
    assert_eq!(
        c.fault(0, 0, WRITE),
        [Action::Protect { page: p(0), access: Access::Write }, Action::Wake { page: p(0) }]
    );
    c.poke(0, 0, 1, 7);
    let (id, out) = c.release(0);
    assert_eq!(out, [Action::Send { to: n(1), msg: Msg::Notice { page: p(0) } }]);
    assert_eq!(c.nodes[0].unacknowledged(), 1);
    c.deliver(0, 1);
    assert_eq!(c.deliver(1, 0), [Action::Released { release: id }]);
    // The home keeps writing without traps: nobody holds a copy it must notify again.
    assert_eq!(c.prot[0][0], Access::Write);
    assert_eq!(c.nodes[0].sharing(p(0)), Some(Sharing::Unshared));
    let (id, out) = c.release(0);
    assert_eq!(out, [Action::Released { release: id }]);
    c.acquire(1);
    assert_eq!(c.read(1, 0, 1), 7);
    // The refetch closed the home's copy again.
    assert_eq!(c.prot[0][0], Access::Read);
}

#[test]
fn a_home_write_during_a_round_waits_for_it() {
    // Node 2 writes its stale copy and releases: the home notifies node 1, the only copy left in
    // the copyset. The home then writes: nobody is in the copyset, but node 1 has not recorded
    // the notice yet and still takes its copy for current, so the home's release must wait.
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    c.read(1, 0, 0);
    c.read(2, 0, 0);
    c.write(1, 0, 1, 1);
    c.release_sync(1);
    assert!(c.nodes[2].is_stale(p(0)));
    c.fault(2, 0, WRITE);
    c.poke(2, 0, 2, 2);
    c.release(2);
    assert_eq!(
        c.deliver(2, 0),
        [Action::ApplyDiff { page: p(0) }, Action::Send { to: n(1), msg: Msg::Notice { page: p(0) } }]
    );
    assert_eq!(c.nodes[0].sharing(p(0)), Some(Sharing::Unshared));
    assert_eq!(
        c.fault(0, 0, WRITE),
        [Action::Protect { page: p(0), access: Access::Write }, Action::Wake { page: p(0) }]
    );
    c.poke(0, 0, 0, 3);
    let (release, out) = c.release(0);
    assert_eq!(out, []);
    c.deliver(0, 1);
    assert_eq!(
        c.deliver(1, 0),
        [Action::Send { to: n(2), msg: Msg::DiffAck { page: p(0), seq: 0 } }, Action::Released { release }]
    );
    c.acquire(1);
    assert_eq!(c.read(1, 0, 0), 3);
}

#[test]
fn dirty_stale_copy_is_flushed_at_acquire() {
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    c.write(1, 0, 0, 11);
    c.write(2, 0, 1, 22);
    c.release_sync(1);
    // Node 2 has been notified but still has unreleased writes in its copy.
    assert!(c.nodes[2].is_stale(p(0)));
    assert_eq!(
        c.acquire(2),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Send { to: n(0), msg: Msg::Diff { page: p(0), seq: 0 } },
        ]
    );
    // Its refetch goes behind the diff on the same link, so it sees its own write and node 1's.
    assert_eq!(c.fault(2, 0, READ), [Action::Send { to: n(0), msg: Msg::Fetch { page: p(0), count: 1 } }]);
    c.pump();
    assert_eq!(&c.mem[2][0][..2], &[11, 22]);
    assert_eq!(&c.mem[0][0][..2], &[11, 22]);
    // Node 1 was notified by node 2's diff.
    assert!(c.nodes[1].is_stale(p(0)));
}

#[test]
fn releases_complete_in_order_and_wait_for_earlier_diffs() {
    let mut c = Cluster::new(2, 2, 0, page_of(Guard::Lock(0)));
    c.write(1, 0, 0, 1);
    let (first, _) = c.release(1);
    // Nothing dirty any more, but the first diff is not acknowledged: the second release waits.
    let (second, out) = c.release(1);
    assert_eq!(out, []);
    assert!(c.released[1].is_empty());
    c.deliver(1, 0);
    assert_eq!(c.deliver(0, 1), [Action::Released { release: first }, Action::Released { release: second }]);
}

#[test]
fn a_release_waits_for_every_one_of_its_diffs() {
    // Node 2 writes pages homed at nodes 0 and 1; the second home answers first.
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    c.write(2, 0, 0, 1);
    c.write(2, 1, 0, 2);
    let (id, out) = c.release(2);
    assert_eq!(
        out,
        [
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(0), msg: Msg::Diff { page: p(0), seq: 0 } },
            Action::Protect { page: p(1), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Diff { page: p(1), seq: 1 } },
        ]
    );
    c.deliver(2, 1);
    assert_eq!(c.deliver(1, 2), []);
    c.deliver(2, 0);
    assert_eq!(c.deliver(0, 2), [Action::Released { release: id }]);
}

#[test]
fn diff_ack_waits_for_every_earlier_notice_of_the_page() {
    // The home's release notifies nodes 2 and 3, which leaves nobody in the copyset. Node 3
    // records its notice, writes its (stale) copy and releases: its diff finds nobody to notify,
    // but must not be acknowledged before node 2 has recorded the notice still outstanding,
    // or a node synchronising with node 3 could go on reading node 2's copy as current.
    let mut c = Cluster::new(4, 1, 0, page_of(Guard::Lock(0)));
    c.read(2, 0, 0);
    c.read(3, 0, 0);
    c.write(0, 0, 0, 1);
    let (home_release, out) = c.release(0);
    assert_eq!(
        out,
        [
            Action::Send { to: n(2), msg: Msg::Notice { page: p(0) } },
            Action::Send { to: n(3), msg: Msg::Notice { page: p(0) } },
        ]
    );
    c.deliver(0, 3);
    c.deliver(3, 0);
    c.fault(3, 0, WRITE);
    c.write(3, 0, 3, 3);
    let (release, _) = c.release(3);
    assert_eq!(c.deliver(3, 0), [Action::ApplyDiff { page: p(0) }]);
    c.deliver(0, 2);
    assert_eq!(
        c.deliver(2, 0),
        [
            Action::Send { to: n(3), msg: Msg::DiffAck { page: p(0), seq: 0 } },
            Action::Released { release: home_release },
        ]
    );
    assert!(c.released[3].is_empty());
    c.deliver(0, 3);
    assert!(c.released[3].contains(&release));
}

#[test]
fn prefetch_fetches_following_pages_of_the_same_home() {
    let mut c = Cluster::new(2, 6, 2, |pg, _| if pg == 3 { Guard::Counter } else { Guard::Lock(0) });
    assert_eq!(c.fault(1, 0, READ), [Action::Send { to: n(0), msg: Msg::Fetch { page: p(0), count: 3 } }]);
    assert!(c.nodes[1].is_fetching(p(1)) && c.nodes[1].is_fetching(p(2)));
    // A fault on a prefetched page waits for the same reply.
    assert_eq!(c.fault(1, 2, WRITE), []);
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Page { page: p(0) } },
            Action::Protect { page: p(1), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Page { page: p(1) } },
            Action::Protect { page: p(2), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Page { page: p(2) } },
        ]
    );
    c.pump();
    assert_eq!(c.prot[1][..3], [Access::Read, Access::Read, Access::Write]);
    assert_eq!(c.sent("Fetch"), 1);
    // Page 3 is SC: a fault on page 2's neighbour stops there; page 4's fetch stops at the home's
    // boundary (page 6 is node 1's).
    c.acquire(1);
    assert_eq!(c.fault(1, 4, READ), [Action::Send { to: n(0), msg: Msg::Fetch { page: p(4), count: 2 } }]);
    c.pump();
    // Pages homed at the faulting node itself are never fetched.
    let out = c.fault(0, 6, READ);
    assert_eq!(out, [Action::Send { to: n(1), msg: Msg::Fetch { page: p(6), count: 3 } }]);
    c.pump();
    // A page the home made SC silently is answered with ScPage, prefetched or not.
    c.set_sc(1, 10);
    assert_eq!(c.fault(0, 9, READ), [Action::Send { to: n(1), msg: Msg::Fetch { page: p(9), count: 3 } }]);
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Protect { page: p(9), access: Access::Read },
            Action::Send { to: n(0), msg: Msg::Page { page: p(9) } },
            Action::Send { to: n(0), msg: Msg::ScPage { page: p(10) } },
            Action::Protect { page: p(11), access: Access::Read },
            Action::Send { to: n(0), msg: Msg::Page { page: p(11) } },
        ]
    );
    c.pump();
    assert!(c.nodes[0].is_sc(p(10)));
    assert_eq!(c.prot[0][10], Access::None);
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
}

#[test]
fn prefetch_cuts_fetches_of_a_sequential_scan() {
    let scan = |prefetch| {
        let mut c = Cluster::new(2, 32, prefetch, page_of(Guard::ReadOnly));
        for pg in 0..32 {
            c.read(1, pg, 0);
        }
        (c.sent("Fetch"), c.sent("Page"))
    };
    assert_eq!(scan(0), (32, 32));
    assert_eq!(scan(3), (8, 32));
    assert_eq!(scan(MAX_PREFETCH), (1, 32));
}

// ----- classification: what survives an acquire -----

#[test]
fn private_and_read_only_pages_survive_acquires() {
    // Page 0: read-only (written by its home before sharing). Page 1: private to node 1, homed
    // at node 0. Page 2: every node writes its own bytes (false sharing).
    let mut c = Cluster::new(4, 3, 0, |pg, b| match pg {
        0 => Guard::ReadOnly,
        1 => Guard::Private(1),
        _ => Guard::Private(b % 4),
    });
    for round in 0..10u8 {
        for k in 0..4 {
            c.write(k, 2, k, round + 1);
            if k == 1 {
                c.write(1, 1, usize::from(round), round + 1);
            }
            assert_eq!(c.read(k, 0, 3), c.shadow[0][3]);
        }
        for k in 0..4 {
            c.release_sync(k);
        }
        for k in 0..4 {
            c.acquire(k);
        }
        for k in 1..4 {
            assert_eq!(c.prot[k][0], Access::Read, "node {k} lost its read-only copy");
        }
        assert_ne!(c.prot[1][1], Access::None, "node 1 lost its private copy");
    }
    for k in 1..4 {
        assert_eq!(c.received_pages[k][0], 1, "node {k} fetched the read-only page again");
    }
    assert_eq!(c.received_pages[1][1], 1, "node 1 fetched its private page again");
    assert_eq!(c.nodes[0].sharing(p(0)), Some(Sharing::Shared([n(1), n(2), n(3)].into())));
    assert_eq!(c.nodes[0].sharing(p(1)), Some(Sharing::Private(n(1))));
    // The falsely shared page, written by everyone, is refetched after each round's acquire.
    assert!(c.received_pages[1][2] >= 9);
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
}

#[test]
fn false_sharing_needs_no_transfer_per_write() {
    // Four nodes take turns writing their own bytes of one page (homed at node 0), then all
    // release and acquire. Under the single-writer protocol every turn moves the page; here each
    // node fetches it once, writes locally, and sends one diff at its release.
    let run = |rounds: usize, sc: bool| {
        let guard = move |_, b: usize| if sc { Guard::Counter } else { Guard::Private(b % 4) };
        let mut c = Cluster::new(4, 1, 0, guard);
        for i in 0..rounds {
            for k in 0..4 {
                c.write(k, 0, k + 4 * (i % 8), i as u8);
            }
        }
        for k in 0..4 {
            c.release_sync(k);
        }
        for k in 0..4 {
            c.acquire(k);
        }
        let sent = c.sent.clone();
        c.final_check();
        sent
    };
    let few = run(1, false);
    let many = run(100, false);
    assert_eq!(few, many, "messages grow with the number of writes");
    let count = |kind| many.get(kind).copied().unwrap_or(0);
    assert_eq!((count("Fetch"), count("Page"), count("Diff"), count("DiffAck")), (3, 3, 3, 3));
    // The home's release notifies nodes 1 to 3 (its writes came after their fetches); their
    // diffs then find nobody else left in the copyset.
    assert_eq!(count("Notice"), 3, "{many:?}");
    assert_eq!(many.values().sum::<usize>(), 18, "{many:?}");
    // The same turns under the single-writer protocol: the page moves for nearly every write.
    let sc = run(100, true);
    assert_eq!((sc.get("ScData").copied(), sc.values().sum::<usize>()), (Some(599), 1198), "{sc:?}");
}

// ----- sequentially consistent pages -----

#[test]
fn sc_pages_are_single_writer() {
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Counter));
    assert!(c.nodes.iter().all(|k| k.is_sc(p(1))));
    c.obtain(1, 0, WRITE);
    assert_eq!(c.prot[0][0], Access::None);
    c.obtain(2, 0, WRITE);
    assert_eq!(c.prot[1][0], Access::None);
    assert_eq!(c.sent("Fetch"), 0);
    assert!(c.sent("ScData") >= 2);
    c.obtain(1, 0, READ);
    c.obtain(0, 0, READ);
    assert_eq!((c.prot[0][0], c.prot[1][0], c.prot[2][0]), (Access::Read, Access::Read, Access::Read));
}

#[test]
fn an_sc_page_leaves_only_after_a_release_and_opens_after_an_acquire() {
    // Page 0 holds plain data (homed at node 0), page 1 a flag (SC, homed at node 0). Node 2
    // holds an old copy of the data. Node 1 writes the data, then the flag; node 2 reads the
    // flag and then the data, with no lock: the flag's move is the synchronisation.
    let mut c = Cluster::new(3, 2, 0, |pg, _| if pg == 0 { Guard::Data(1) } else { Guard::Flag(1) });
    c.read(2, 0, 0);
    c.write(1, 0, 0, 5);
    c.obtain(1, 1, WRITE);
    c.poke(1, 1, 0, 1);
    // Node 2 asks for the flag; the home recalls it from node 1.
    c.fault(2, 1, READ);
    c.deliver(2, 0);
    // Node 1 closes the flag page at once, but its bytes wait for the release of the data.
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Protect { page: p(1), access: Access::Read },
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(0), msg: Msg::Diff { page: p(0), seq: 0 } },
        ]
    );
    assert_eq!(c.nodes[1].access(p(1)), Access::Read);
    // Home: applies the diff, notifies node 2, which records the notice; then the diff's ack
    // lets the flag go.
    assert_eq!(
        c.deliver(1, 0),
        [Action::ApplyDiff { page: p(0) }, Action::Send { to: n(2), msg: Msg::Notice { page: p(0) } }]
    );
    c.deliver(0, 2);
    c.deliver(2, 0);
    assert_eq!(c.deliver(0, 1), [Action::Send { to: n(0), msg: Msg::Sc(sc::Msg::RecallAck { page: p(1) }) }]);
    c.deliver(1, 0);
    // Node 2 gets the flag: the acquire before it opens drops the stale data.
    assert_eq!(
        c.deliver(0, 2),
        [
            Action::Install { page: p(1) },
            Action::Protect { page: p(0), access: Access::None },
            Action::Protect { page: p(1), access: Access::Read },
            Action::Wake { page: p(1) },
        ]
    );
    assert_eq!(c.mem[2][1][0], 1);
    assert_eq!(c.read(2, 0, 0), 5);
}

#[test]
fn the_home_of_an_sc_page_releases_before_serving_it() {
    // Node 0 is home of both pages: it writes data a reader holds, then its flag.
    let mut c = Cluster::new(2, 2, 0, |pg, _| if pg == 1 { Guard::Flag(0) } else { Guard::Data(0) });
    c.read(1, 0, 0);
    c.write(0, 0, 0, 3);
    c.poke(0, 1, 0, 1);
    c.fault(1, 1, READ);
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Protect { page: p(1), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Notice { page: p(0) } },
        ]
    );
    c.deliver(0, 1);
    assert_eq!(
        c.deliver(1, 0),
        [Action::Send {
            to: n(1),
            msg: Msg::Sc(sc::Msg::Grant { page: p(1), access: Access::Read, data: true })
        }]
    );
    c.deliver(0, 1);
    assert_eq!(c.prot[1][0], Access::None);
    assert_eq!(c.read(1, 0, 0), 3);
    // With nothing unreleased, the flag moves without delay.
    c.fault(0, 1, WRITE);
    c.pump();
    c.poke(0, 1, 0, 2);
    c.fault(1, 1, READ);
    c.deliver(1, 0);
    assert!(matches!(c.links[c.link(0, 1)].front().map(|pk| pk.msg), Some(Msg::Sc(sc::Msg::Grant { .. }))));
}

/// Found by fuzzing (`fuzz/corpus/lrc_protocol/`): while an SC page's messages are held back for
/// a release, every message this node sends about the page waits, so no correct peer can send it
/// the page's bytes. A broken peer's data used to be accepted, and its `Install` held back with
/// the rest, then emitted when the release completed, while handling a `DiffAck` that carries no
/// bytes (the runtime stops with "asked to install without its bytes").
#[test]
fn data_for_an_sc_page_whose_messages_are_held_is_rejected() {
    let config = LrcConfig::default().with_sc_pages(0..1);
    let mut nodes: Vec<LrcNode> = (0..3).map(|i| LrcNode::new(n(i), 3, 1, config.clone())).collect();
    let mut out = Vec::new();
    let mut handle = |nodes: &mut Vec<LrcNode>, to: usize, from: u16, msg: Msg| {
        out.clear();
        nodes[to].handle(n(from), msg, &mut out).expect("accepted");
        out.clone()
    };
    // Node 0, home of SC page 0, writes page 2 (homed at node 2): its copy is dirty.
    let mut local = Vec::new();
    nodes[0].fault(p(2), WRITE, &mut local);
    handle(&mut nodes, 2, 0, Msg::Fetch { page: p(2), count: 1 });
    handle(&mut nodes, 0, 2, Msg::Page { page: p(2) });
    // Node 1 asks for page 0: its grant waits for node 0's release of page 2.
    local.clear();
    nodes[1].fault(p(0), WRITE, &mut local);
    assert_eq!(
        handle(&mut nodes, 0, 1, Msg::Sc(sc::Msg::WriteReq { page: p(0) })),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Protect { page: p(2), access: Access::Read },
            Action::Send { to: n(2), msg: Msg::Diff { page: p(2), seq: 0 } },
        ]
    );
    // Node 0's own read of page 0 recalls it from node 1: held back too.
    local.clear();
    nodes[0].fault(p(0), READ, &mut local);
    assert_eq!(local, []);
    // Node 1 has neither the grant nor the recall: page 0's bytes from it answer nothing.
    assert_rejected(&nodes[0], 1, Msg::Sc(sc::Msg::RecallAck { page: p(0) }));
    assert_rejected(&nodes[0], 1, Msg::Sc(sc::Msg::Grant { page: p(0), access: Access::Write, data: true }));
    // The release completes and the held messages go, without any Install.
    handle(&mut nodes, 2, 0, Msg::Diff { page: p(2), seq: 0 });
    let actions = handle(&mut nodes, 0, 2, Msg::DiffAck { page: p(2), seq: 0 });
    assert_eq!(
        actions,
        [
            Action::Send {
                to: n(1),
                msg: Msg::Sc(sc::Msg::Grant { page: p(0), access: Access::Write, data: true })
            },
            Action::Send { to: n(1), msg: Msg::Sc(sc::Msg::Recall { page: p(0), keep_read: true }) },
        ]
    );
}

// ----- becoming SC at run time -----

#[test]
fn set_sc_on_a_pristine_page_at_its_home_is_silent() {
    let mut c = Cluster::new(2, 1, 0, page_of(Guard::Counter));
    let mut c2 = Cluster::new(2, 1, 0, page_of(Guard::Lock(0)));
    assert_eq!(c2.set_sc(0, 0), []);
    assert!(c2.nodes[0].is_sc(p(0)));
    assert!(!c2.nodes[1].is_sc(p(0)));
    // Node 1 learns it from the answer to its fetch and asks again through the SC protocol.
    c2.fault(1, 0, WRITE);
    assert_eq!(c2.deliver(1, 0), [Action::Send { to: n(1), msg: Msg::ScPage { page: p(0) } }]);
    assert_eq!(c2.deliver(0, 1), [Action::Send { to: n(0), msg: Msg::Sc(sc::Msg::WriteReq { page: p(0) }) }]);
    c2.pump();
    assert_eq!((c2.prot[0][0], c2.prot[1][0]), (Access::None, Access::Write));
    // The same as a page SC from the start.
    c.obtain(1, 0, WRITE);
    assert_eq!((c.prot[0][0], c.prot[1][0]), (Access::None, Access::Write));
}

#[test]
fn a_prefetch_and_a_make_sc_are_answered_separately() {
    let mut c = Cluster::new(2, 2, 1, page_of(Guard::Lock(0)));
    assert_eq!(c.fault(1, 0, READ), [Action::Send { to: n(0), msg: Msg::Fetch { page: p(0), count: 2 } }]);
    assert_eq!(c.set_sc(1, 1), [Action::Send { to: n(0), msg: Msg::MakeSc { page: p(1) } }]);
    // The home made page 1 SC before the fetch arrived: both get a ScPage.
    c.set_sc(0, 1);
    assert_eq!(
        c.deliver(1, 0),
        [
            Action::Protect { page: p(0), access: Access::Read },
            Action::Send { to: n(1), msg: Msg::Page { page: p(0) } },
            Action::Send { to: n(1), msg: Msg::ScPage { page: p(1) } },
        ]
    );
    assert_eq!(c.deliver(1, 0), [Action::Send { to: n(1), msg: Msg::ScPage { page: p(1) } }]);
    c.deliver(0, 1);
    c.deliver(0, 1);
    assert!(c.nodes[1].is_sc(p(1)) && !c.nodes[1].is_quiescent());
    c.deliver(0, 1);
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
    c.obtain(1, 1, WRITE);
}

#[test]
fn converting_a_shared_page_keeps_every_write() {
    // Three nodes write their own bytes of page 0 (homed at node 0) in release-consistent mode;
    // node 2 then asks for the page to become SC while nodes 1 and 2 have unreleased writes.
    let mut c = Cluster::new(3, 1, 0, |_, b| Guard::Private(b % 3));
    c.write(0, 0, 0, 10);
    c.write(1, 0, 1, 11);
    c.write(2, 0, 2, 12);
    c.release_sync(0);
    c.write(1, 0, 4, 14);
    assert_eq!(c.set_sc(2, 0), [Action::Send { to: n(0), msg: Msg::MakeSc { page: p(0) } }]);
    // Until the home answers, node 2 keeps its copy; it is still writable.
    assert_eq!(c.fault(2, 0, WRITE), [Action::Wake { page: p(0) }]);
    assert_eq!(
        c.deliver(2, 0),
        [
            Action::Send { to: n(1), msg: Msg::Convert { page: p(0) } },
            Action::Send { to: n(2), msg: Msg::Convert { page: p(0) } }
        ]
    );
    assert_eq!(
        c.deliver(0, 1),
        [
            Action::Protect { page: p(0), access: Access::None },
            Action::Send { to: n(0), msg: Msg::Diff { page: p(0), seq: 0 } },
            Action::Send { to: n(0), msg: Msg::ConvertAck { page: p(0) } },
        ]
    );
    c.deliver(0, 2);
    c.deliver(1, 0);
    c.deliver(1, 0);
    assert!(!c.nodes[0].is_sc(p(0)));
    c.deliver(2, 0);
    c.deliver(2, 0);
    assert!(c.nodes[0].is_sc(p(0)));
    c.pump();
    assert_eq!(&c.mem[0][0][..5], &[10, 11, 12, 0, 14]);
    assert_eq!(c.prot[0][0], Access::Write);
    // From now on the page is single-writer.
    c.obtain(1, 0, WRITE);
    assert_eq!((c.prot[0][0], c.prot[1][0], c.prot[2][0]), (Access::None, Access::Write, Access::None));
    assert_eq!(c.read(2, 0, 4), 14);
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
    // Asking again changes nothing.
    assert_eq!(c.set_sc(0, 0), []);
    assert_eq!(c.set_sc(1, 0), []);
}

#[test]
fn a_conversion_is_a_notice_round() {
    // Releases that reach the home while it converts a page must not complete before every
    // node has dropped its copy: a node that has not seen `Convert` yet still holds an old copy
    // no notice will ever reach, and a node synchronising with the release could read it.
    let mut c = Cluster::new(3, 1, 0, page_of(Guard::Lock(0)));
    c.read(1, 0, 0);
    c.read(2, 0, 0);
    // The home writes while both hold current copies, starts converting, then releases.
    c.write(0, 0, 0, 7);
    c.set_sc(0, 0);
    let (home_release, out) = c.release(0);
    assert_eq!(out, []);
    // Node 1, which has not heard of the conversion yet, writes and releases too.
    assert_eq!(
        c.fault(1, 0, WRITE),
        [
            Action::Twin { page: p(0) },
            Action::Protect { page: p(0), access: Access::Write },
            Action::Wake { page: p(0) }
        ]
    );
    c.poke(1, 0, 2, 8);
    let (release, _) = c.release(1);
    assert_eq!(c.deliver(1, 0), [Action::ApplyDiff { page: p(0) }]);
    c.deliver(0, 1);
    c.deliver(1, 0);
    assert!(c.released[0].is_empty() && c.released[1].is_empty());
    assert_eq!(c.prot[2][0], Access::Read);
    c.deliver(0, 2);
    assert_eq!(c.prot[2][0], Access::None);
    let out = c.deliver(2, 0);
    assert!(out.contains(&Action::Send { to: n(1), msg: Msg::DiffAck { page: p(0), seq: 0 } }), "{out:?}");
    assert!(out.contains(&Action::Released { release: home_release }), "{out:?}");
    c.deliver(0, 1);
    assert!(c.released[1].contains(&release));
    assert_eq!((c.read(2, 0, 0), c.read(2, 0, 2)), (7, 8));
}

#[test]
fn faults_during_a_conversion_wait_for_it() {
    let mut c = Cluster::new(3, 1, 0, |_, b| Guard::Private(b % 3));
    c.read(1, 0, 0);
    assert_eq!(c.prot[0][0], Access::Read);
    c.set_sc(0, 0);
    // A write at the home waits for the conversion.
    assert_eq!(c.fault(0, 0, WRITE), []);
    // Node 1 does not know yet: its write is a release-consistent one, flushed by the conversion.
    assert_eq!(
        c.fault(1, 0, WRITE),
        [
            Action::Twin { page: p(0) },
            Action::Protect { page: p(0), access: Access::Write },
            Action::Wake { page: p(0) }
        ]
    );
    c.poke(1, 0, 1, 7);
    // Node 2 has no copy and fetches: the home answers ScPage, after its Convert; node 2's
    // thread waits for an SC grant meanwhile.
    assert_eq!(c.fault(2, 0, READ), [Action::Send { to: n(0), msg: Msg::Fetch { page: p(0), count: 1 } }]);
    c.pump();
    assert!(c.nodes.iter().all(|k| k.is_sc(p(0))));
    // The home's parked write was served when the conversion completed; node 2's SC request,
    // sent after its ConvertAck, came next and made the home share the page.
    assert_eq!(c.received_pages[2][0], 1);
    assert_eq!((c.prot[0][0], c.prot[1][0], c.prot[2][0]), (Access::Read, Access::None, Access::Read));
    assert_eq!(c.mem[0][0][1], 7);
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
}

// ----- malformed input -----

/// Hands `msg` from `from` to a copy of `node` and checks it is rejected without any effect.
fn assert_rejected(node: &LrcNode, from: u16, msg: Msg) {
    let mut copy = node.clone();
    let mut out = Vec::new();
    let err =
        copy.handle(n(from), msg, &mut out).expect_err(&format!("{msg:?} from {from} accepted by {node:?}"));
    assert!(!err.reason().is_empty());
    assert!(err.to_string().contains(err.reason()));
    assert!(out.is_empty(), "actions emitted on error: {out:?}");
    assert_eq!(&copy, node, "state changed by rejected {msg:?}");
}

#[test]
fn malformed_messages_are_rejected_without_effect() {
    let mut c = Cluster::new(3, 2, 0, |pg, _| if pg == 5 { Guard::Counter } else { Guard::Lock(0) });
    c.read(1, 0, 0);
    c.write(2, 0, 0, 1);
    c.release(2);
    c.deliver(2, 0); // notice to node 1 outstanding
    let page = p(0);
    let home = &c.nodes[0];
    assert_rejected(home, 1, Msg::Fetch { page: p(6), count: 1 }); // out of range
    assert_rejected(home, 1, Msg::Fetch { page: p(u64::MAX), count: 1 });
    assert_rejected(home, 1, Msg::Fetch { page, count: 0 });
    assert_rejected(home, 1, Msg::Fetch { page, count: MAX_PREFETCH + 2 });
    assert_rejected(home, 1, Msg::Fetch { page: p(1), count: 2 }); // runs into node 1's pages
    assert_rejected(home, 2, Msg::Fetch { page, count: 1 }); // holds a current copy
    assert_rejected(home, 0, Msg::Fetch { page: p(1), count: 1 }); // from itself
    assert_rejected(home, 3, Msg::Fetch { page: p(1), count: 1 }); // outside the cluster
    assert_rejected(home, 1, Msg::Fetch { page: p(2), count: 1 }); // not the home
    assert_rejected(home, 1, Msg::Page { page }); // pages come from homes
    assert_rejected(home, 1, Msg::Diff { page: p(1), seq: 0 }); // never fetched
    assert_rejected(home, 1, Msg::Diff { page: p(2), seq: 0 }); // not the home
    assert_rejected(home, 2, Msg::DiffAck { page, seq: 0 });
    assert_rejected(home, 2, Msg::NoticeAck { page }); // node 2 was not notified
    assert_rejected(home, 1, Msg::NoticeAck { page: p(1) });
    assert_rejected(home, 1, Msg::ConvertAck { page });
    assert_rejected(home, 1, Msg::Convert { page }); // homes do not convert their own pages' copies
    assert_rejected(home, 1, Msg::MakeSc { page: p(2) });
    assert_rejected(home, 1, Msg::Sc(sc::Msg::ReadReq { page })); // not an SC page
    assert_rejected(home, 1, Msg::Notice { page: p(2) }); // holds no copy
    assert_rejected(home, 2, Msg::ScPage { page: p(2) }); // asked for nothing

    let reader = &c.nodes[1];
    assert_rejected(reader, 0, Msg::Page { page }); // not fetching
    assert_rejected(reader, 0, Msg::ScPage { page });
    assert_rejected(reader, 2, Msg::Notice { page }); // not from the home
    assert_rejected(reader, 0, Msg::DiffAck { page, seq: 0 }); // no diff sent
    assert_rejected(reader, 0, Msg::Sc(sc::Msg::Invalidate { page: p(5) })); // holds nothing
    assert_rejected(reader, 2, Msg::Convert { page: p(5) }); // already SC
    assert_rejected(reader, 0, Msg::Fetch { page, count: 1 }); // not the home
    // The notice is on its way; a second one is impossible.
    let mut noticed = c.nodes[1].clone();
    noticed.handle(n(0), Msg::Notice { page }, &mut Vec::new()).expect("first notice");
    assert_rejected(&noticed, 0, Msg::Notice { page });

    let writer = &c.nodes[2];
    assert_rejected(writer, 0, Msg::DiffAck { page, seq: 1 }); // wrong number
    assert_rejected(writer, 1, Msg::DiffAck { page, seq: 0 }); // not from the home
    assert_rejected(writer, 0, Msg::DiffAck { page: p(1), seq: 0 }); // wrong page
    c.pump();
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));

    // During a conversion, only first SC requests are queued.
    c.set_sc(0, 1);
    c.fault(1, 1, READ); // fetch in flight... answered after the conversion starts
    c.pump();
    c.read(1, 0, 0);
    c.set_sc(0, 0);
    let converting = &c.nodes[0];
    assert_rejected(converting, 1, Msg::Sc(sc::Msg::InvAck { page }));
    let mut queued = converting.clone();
    queued.handle(n(1), Msg::Sc(sc::Msg::ReadReq { page }), &mut Vec::new()).expect("queued");
    assert_rejected(&queued, 1, Msg::Sc(sc::Msg::WriteReq { page }));
    assert_rejected(converting, 1, Msg::ConvertAck { page: p(1) });
    c.pump();
    assert!(c.nodes.iter().all(LrcNode::is_quiescent));
}

fn random_msg(rng: &mut Rng, limit: u64) -> Msg {
    let page = if rng.percent(5) {
        p(u64::MAX - rng.below(2) as u64)
    } else {
        p(rng.below(limit as usize + 2) as u64)
    };
    let seq = rng.below(4) as u64;
    let access = [Access::None, Access::Read, Access::Write][rng.below(3)];
    let flag = rng.percent(50);
    match rng.below(17) {
        0 => Msg::Fetch { page, count: rng.below(4) as u16 },
        1 => Msg::Page { page },
        2 => Msg::ScPage { page },
        3 => Msg::Diff { page, seq },
        4 => Msg::DiffAck { page, seq },
        5 => Msg::Notice { page },
        6 => Msg::NoticeAck { page },
        7 => Msg::MakeSc { page },
        8 => Msg::Convert { page },
        9 => Msg::ConvertAck { page },
        10 => Msg::Sc(sc::Msg::ReadReq { page }),
        11 => Msg::Sc(sc::Msg::WriteReq { page }),
        12 => Msg::Sc(sc::Msg::Grant { page, access, data: flag }),
        13 => Msg::Sc(sc::Msg::Invalidate { page }),
        14 => Msg::Sc(sc::Msg::InvAck { page }),
        15 => Msg::Sc(sc::Msg::Recall { page, keep_read: flag }),
        _ => Msg::Sc(sc::Msg::RecallAck { page }),
    }
}

#[test]
fn garbage_never_panics_and_errors_change_nothing() {
    // Garbage thrown at copies of the nodes of a correctly running cluster.
    for seed in 0..12u64 {
        let mut rng = Rng::new(500 + seed);
        let mut c = mixed_cluster(3, 0).with_threads(2);
        for _ in 0..150 {
            let busy = c.busy_links();
            if !busy.is_empty() && rng.percent(50) {
                c.deliver_link(rng.pick(&busy));
            } else {
                let (k, t) = (rng.below(3), rng.below(2));
                if c.threads[k][t].idle() {
                    c.new_task(&mut rng, k, t, 5);
                }
                c.step(k, t);
            }
            for _ in 0..5 {
                let target = rng.below(3);
                let msg = random_msg(&mut rng, c.pages() as u64);
                let from = if rng.percent(3) { n(u16::MAX) } else { n(rng.below(4) as u16) };
                let mut copy = c.nodes[target].clone();
                let mut out = Vec::new();
                if copy.handle(from, msg, &mut out).is_err() {
                    assert!(out.is_empty());
                    assert_eq!(copy, c.nodes[target]);
                }
            }
        }
    }
    // Nodes that accept whatever garbage they can and drift into odd states.
    for seed in 0..12u64 {
        let mut rng = Rng::new(9_000 + seed);
        let nodes = 2 + rng.below(3) as u16;
        let config = LrcConfig::default().with_prefetch(rng.below(3) as u16).with_sc_pages(1..2);
        let mut states: Vec<LrcNode> =
            (0..nodes).map(|i| LrcNode::new(n(i), nodes, 2, config.clone())).collect();
        let limit = states[0].page_count();
        for _ in 0..3_000 {
            let k = rng.below(states.len());
            let mut out = Vec::new();
            match rng.below(10) {
                0 => {
                    let kind = if rng.percent(50) { READ } else { WRITE };
                    states[k].fault(p(rng.below(limit as usize + 2) as u64), kind, &mut out);
                }
                1 => states[k].acquire(&mut out),
                2 => {
                    states[k].release(&mut out);
                }
                3 => states[k].set_sc(p(rng.below(limit as usize + 1) as u64), &mut out),
                _ => {
                    let msg = random_msg(&mut rng, limit);
                    let from = n(rng.below(usize::from(nodes) + 1) as u16);
                    let before = states[k].clone();
                    if states[k].handle(from, msg, &mut out).is_err() {
                        assert!(out.is_empty());
                        assert_eq!(states[k], before);
                    }
                }
            }
            let _ = states[k].is_quiescent();
        }
    }
}

#[test]
fn out_of_range_calls_are_ignored() {
    let mut node = LrcNode::new(n(0), 2, 2, LrcConfig::default());
    let mut out = Vec::new();
    node.fault(p(4), WRITE, &mut out);
    node.fault(p(u64::MAX), READ, &mut out);
    node.set_sc(p(4), &mut out);
    assert!(out.is_empty());
    assert!(node.is_quiescent());
}

// ----- randomized programs -----

/// A program over `nodes * 4` pages: per node one read-only page, one page of bytes guarded by
/// locks and private bytes mixed, one page with the nodes' published data (false sharing), and
/// one page per home alternating between SC counters and SC flags.
fn mixed_cluster(nodes: u16, prefetch: u16) -> Cluster {
    let count = usize::from(nodes);
    Cluster::new(nodes, 4, prefetch, move |pg, b| match pg % 4 {
        0 => Guard::ReadOnly,
        1 => {
            if b % 4 == 0 {
                Guard::Private((b / 4 + pg) % count)
            } else {
                Guard::Lock((pg * 3 + b) % 5)
            }
        }
        2 if pg == 2 && b < count => Guard::Data(b),
        2 => Guard::Lock((pg + b) % 5),
        _ if pg == 3 && b < count => Guard::Flag(b),
        _ => Guard::Counter,
    })
}

/// Adds `c`'s message counts to `totals`.
fn add_counts(totals: &mut BTreeMap<&'static str, usize>, c: &Cluster) {
    for (&kind, &count) in &c.sent {
        *totals.entry(kind).or_default() += count;
    }
}

#[test]
fn random_data_race_free_programs_see_every_write() {
    let mut totals = BTreeMap::new();
    let mut checks = 0;
    let mut steps = 0;
    for seed in 0..100u64 {
        let mut rng = Rng::new(seed);
        let nodes = 2 + (seed % 3) as u16;
        let prefetch = (seed % 4) as u16;
        let mut c = mixed_cluster(nodes, prefetch).with_threads(2);
        c.run(&mut rng, 2_000, 0);
        add_counts(&mut totals, &c);
        checks += c.checks;
        steps += c.steps_done;
    }
    assert!(steps > 70_000, "{steps} steps");
    assert!(checks > 200_000, "{checks} checks");
    // The runs went through every part of the protocol, many times.
    for kind in ["Fetch", "Page", "Diff", "Notice", "ScData", "ScControl"] {
        assert!(totals.get(kind).copied().unwrap_or(0) > 2_000, "{totals:?}");
    }
}

#[test]
fn random_programs_with_pages_becoming_sc() {
    let mut totals = BTreeMap::new();
    for seed in 0..60u64 {
        let mut rng = Rng::new(1_000 + seed);
        let nodes = 2 + (seed % 3) as u16;
        let mut c = mixed_cluster(nodes, (seed % 3) as u16).with_threads(2);
        c.run(&mut rng, 2_000, 10);
        add_counts(&mut totals, &c);
    }
    for kind in ["MakeSc", "Convert", "Notice", "ScData"] {
        assert!(totals.get(kind).copied().unwrap_or(0) > 20, "{totals:?}");
    }
}

#[test]
fn random_conversions_under_locks() {
    // Many pages of lock-guarded and private bytes, converted to SC one after another while
    // critical sections run on them: releases that race with a conversion must still order
    // every write before the next holder's reads.
    let mut totals = BTreeMap::new();
    for seed in 0..std::env::var("SEEDS").map_or(40, |v| v.parse().unwrap()) {
        let mut rng = Rng::new(5_000 + seed);
        let nodes = 3 + (seed % 2) as u16;
        let count = usize::from(nodes);
        let mut c = Cluster::new(nodes, 6, (seed % 2) as u16, move |pg, b| {
            if b % 8 == 0 { Guard::Private((b / 8 + pg) % count) } else { Guard::Lock((pg + b) % 3) }
        })
        .with_threads(2);
        c.run(&mut rng, 3_000, 30);
        add_counts(&mut totals, &c);
    }
    assert!(totals.get("Convert").copied().unwrap_or(0) > 500, "{totals:?}");
}
