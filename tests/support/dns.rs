//! An authoritative DNS server for one test, on loopback, over the wire: UDP and TCP on the same
//! 127.0.0.1 port (chosen by binding :0), so the real daemon can be pointed at it with
//! `[dns] nameservers = ["<addr>"]`.
//!
//! Records are grouped into zones automatically: a name belongs to the zone made of its last two
//! labels (`mail.example.test` → `example.test`), reverse names to `in-addr.arpa` / `ip6.arpa`.
//! Every zone gets an SOA and an NS, and a root zone `.` holding only an SOA is always served,
//! so that any name the test did not register gets an authoritative NXDOMAIN (a name under no
//! served zone would otherwise get REFUSED, which resolvers treat as a failure, not as "no such
//! domain"). A name that exists with other types answers NOERROR with no data.
//!
//! The server runs on its own thread with its own runtime, so it keeps answering while the test
//! blocks its thread (waiting on a child process, say), whatever the test's runtime flavour.
//! Dropping the `TestDns` stops it.

use hickory_proto::rr::rdata::{A, AAAA, MX, NS, PTR, SOA, TXT};
use hickory_proto::rr::{LowerName, Name, RData, Record};
use hickory_server::Server;
use hickory_server::net::runtime::TokioRuntimeProvider;
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// TTL of every served record.
const TTL: u32 = 60;
/// SOA minimum, i.e. how long resolvers cache a negative answer.
const NEGATIVE_TTL: u32 = 5;
/// The name server named in every zone's SOA and NS (it need not resolve).
const NS_NAME: &str = "ns.test-dns.invalid.";
const HOSTMASTER: &str = "hostmaster.test-dns.invalid.";

/// A running test DNS server; stops when dropped.
pub struct TestDns {
    /// UDP and TCP, same port.
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// The records and failures a `TestDns` will serve. All names are absolute, with or without the
/// trailing dot. Invalid input panics: this is test set-up.
#[derive(Default)]
pub struct ZoneBuilder {
    records: Vec<Record>,
    servfail: Vec<Name>,
}

impl TestDns {
    /// Starts describing the zones; `.start()` serves them.
    #[allow(clippy::new_ret_no_self)]
    pub fn new() -> ZoneBuilder {
        ZoneBuilder::default()
    }
}

impl ZoneBuilder {
    /// `domain MX preference exchange`; an exchange of "." is a null MX (RFC 7505).
    pub fn mx(self, domain: &str, preference: u16, exchange: &str) -> Self {
        let rdata = RData::MX(MX::new(preference, fqdn(exchange)));
        self.record(domain, rdata)
    }

    /// `name A ip` (IPv4).
    pub fn a(self, name: &str, ip: &str) -> Self {
        self.record(name, RData::A(A(ipv4(ip))))
    }

    /// `name AAAA ip` (IPv6).
    pub fn aaaa(self, name: &str, ip: &str) -> Self {
        self.record(name, RData::AAAA(AAAA(ipv6(ip))))
    }

    /// `name TXT text`, split into 255-byte character-strings when longer (as a DKIM key needs);
    /// clients concatenate them back.
    pub fn txt(self, name: &str, text: &str) -> Self {
        self.record(name, RData::TXT(TXT::new(chunks(text, 255))))
    }

    /// The PTR for `ip` (either family), its reverse name built from the address.
    pub fn ptr(self, ip: &str, name: &str) -> Self {
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IP address {ip:?}: {e}"));
        let mut owner = Name::from(ip);
        owner.set_fqdn(true);
        self.push(owner, RData::PTR(PTR(fqdn(name))))
    }

    /// Lists `ip` in the DNSBL `zone` with the return `code`:
    /// `("zen.test", "127.0.0.2", "127.0.0.4")` → `2.0.0.127.zen.test A 127.0.0.4`.
    /// An IPv6 `ip` gets the 32-nibble reversed form.
    pub fn dnsbl_listed(self, zone: &str, ip: &str, code: &str) -> Self {
        let ip: IpAddr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IP address {ip:?}: {e}"));
        let zone = zone.trim().trim_end_matches('.');
        let owner = format!("{}.{zone}", reversed_labels(ip));
        self.a(&owner, code)
    }

    /// Every query for `domain` and any name below it answers SERVFAIL (a temporary DNS
    /// failure), whatever records were registered there.
    pub fn servfail(mut self, domain: &str) -> Self {
        self.servfail.push(fqdn(domain));
        self
    }

    /// Any other record: `name` gets `rdata` (e.g. a CNAME or TLSA the helpers above don't cover).
    pub fn record(self, name: &str, rdata: RData) -> Self {
        self.push(fqdn(name), rdata)
    }

    fn push(mut self, owner: Name, rdata: RData) -> Self {
        let record = Record::from_rdata(owner, TTL, rdata);
        if !self.records.contains(&record) {
            self.records.push(record);
        }
        self
    }

    /// Binds 127.0.0.1:<port> for UDP and TCP and starts serving. The sockets are bound before
    /// this returns, so queries sent right away are answered.
    pub async fn start(self) -> TestDns {
        let catalog = self.catalog();
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("test DNS: local address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("test-dns-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test DNS: runtime");
                runtime.block_on(async move {
                    let mut server = Server::new(catalog);
                    server.register_socket(
                        tokio::net::UdpSocket::from_std(udp).expect("test DNS: UDP socket"),
                    );
                    server.register_listener(
                        tokio::net::TcpListener::from_std(tcp).expect("test DNS: TCP listener"),
                        Duration::from_secs(5),
                        32,
                    );
                    // Sent or dropped: either way, stop.
                    let _ = stopped.await;
                    let _ = server.shutdown_gracefully().await;
                });
            })
            .expect("test DNS: thread");
        TestDns {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn catalog(self) -> Catalog {
        let mut zones: BTreeMap<Name, Vec<Record>> = BTreeMap::new();
        zones.insert(Name::root(), Vec::new());
        for record in self.records {
            zones.entry(zone_of(&record.name)).or_default().push(record);
        }
        let mut catalog = Catalog::new();
        for (origin, records) in zones {
            // A zone at or below a SERVFAIL name would answer for part of it: leave it out.
            if !origin.is_root() && self.servfail.iter().any(|s| s.zone_of(&origin)) {
                continue;
            }
            catalog.upsert(LowerName::new(&origin), vec![zone(origin, records)]);
        }
        // A catalog entry with no zone handler: the catalog finds it for the name and every
        // name below (the deepest entry wins), no handler answers, and hickory-server 0.26
        // replies SERVFAIL ("all zone handlers not answering").
        for name in &self.servfail {
            catalog.upsert(LowerName::new(name), Vec::new());
        }
        catalog
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One authoritative zone: SOA (and NS, except at the root) plus `records`.
fn zone(origin: Name, records: Vec<Record>) -> Arc<dyn ZoneHandler> {
    let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
        origin.clone(),
        ZoneType::Primary,
        AxfrPolicy::Deny,
    );
    let soa = SOA::new(
        fqdn(NS_NAME),
        fqdn(HOSTMASTER),
        1,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    );
    let mut apex = vec![Record::from_rdata(origin.clone(), TTL, RData::SOA(soa))];
    if !origin.is_root() {
        apex.push(Record::from_rdata(
            origin.clone(),
            TTL,
            RData::NS(NS(fqdn(NS_NAME))),
        ));
    }
    for record in apex.into_iter().chain(records) {
        let what = format!("{} {}", record.name, record.record_type());
        assert!(
            zone.upsert_mut(record, 1),
            "test DNS: cannot add {what} to zone {origin} (a CNAME beside other records?)"
        );
    }
    Arc::new(zone)
}

/// The zone a name is served from: `in-addr.arpa` / `ip6.arpa` for reverse names, otherwise
/// its last two labels (the name itself when it has fewer).
fn zone_of(owner: &Name) -> Name {
    for reverse in ["in-addr.arpa.", "ip6.arpa."] {
        let reverse = fqdn(reverse);
        if reverse.zone_of(owner) {
            return reverse;
        }
    }
    owner.trim_to(2)
}

/// An absolute, lower-case name from `s` (trailing dot optional; "" or "." is the root).
fn fqdn(s: &str) -> Name {
    let s = s.trim().trim_end_matches('.');
    if s.is_empty() {
        return Name::root();
    }
    let mut name = Name::from_ascii(s.to_ascii_lowercase())
        .unwrap_or_else(|e| panic!("bad DNS name {s:?}: {e}"));
    name.set_fqdn(true);
    name
}

fn ipv4(ip: &str) -> Ipv4Addr {
    ip.parse()
        .unwrap_or_else(|e| panic!("bad IPv4 address {ip:?}: {e}"))
}

fn ipv6(ip: &str) -> Ipv6Addr {
    ip.parse()
        .unwrap_or_else(|e| panic!("bad IPv6 address {ip:?}: {e}"))
}

/// The address as DNSBL labels: `4.3.2.1` for 1.2.3.4, reversed nibbles for IPv6.
fn reversed_labels(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(ip) => {
            let o = ip.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(ip) => ip
            .octets()
            .iter()
            .rev()
            .flat_map(|b| [b & 0x0f, b >> 4])
            .map(|nibble| format!("{nibble:x}"))
            .collect::<Vec<_>>()
            .join("."),
    }
}

/// `text` cut into pieces of at most `max` bytes, on character boundaries.
fn chunks(text: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if current.len() + c.len_utf8() > max {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() || out.is_empty() {
        out.push(current);
    }
    out
}

/// A UDP socket and a TCP listener on the same free loopback port.
fn bind_pair() -> (std::net::UdpSocket, std::net::TcpListener) {
    for _ in 0..100 {
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("test DNS: bind UDP");
        let port = udp.local_addr().expect("test DNS: UDP address").port();
        if let Ok(tcp) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            udp.set_nonblocking(true)
                .expect("test DNS: non-blocking UDP");
            tcp.set_nonblocking(true)
                .expect("test DNS: non-blocking TCP");
            return (udp, tcp);
        }
    }
    panic!("test DNS: no loopback port free for both UDP and TCP");
}
