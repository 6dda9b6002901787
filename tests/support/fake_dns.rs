//! An in-process authoritative DNS server (hickory-server) answering for
//! test zones over UDP and TCP on one loopback port.
//!
//! Zone contents are built by [`ZoneBuilder`], which knows nothing about
//! serving; [`FakeDns`] serves any set of zone handlers, so signed zones can
//! be added without touching the server half.
//!
//! Answers: records of a served zone as configured; NXDOMAIN for a name
//! inside a zone that has no records; NOERROR with no answers (NODATA) for an
//! existing name without the asked type; REFUSED for a name outside every
//! zone; SERVFAIL for names at or below a [`ZoneBuilder::servfail_for`] name.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener as StdTcpListener, UdpSocket};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::net::runtime::{Time, TokioRuntimeProvider};
use hickory_server::proto::op::{Metadata, ResponseCode};
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TLSA, TXT};
use hickory_server::proto::rr::{LowerName, Name, RData, Record};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{
    AxfrPolicy, Catalog, MessageResponseBuilder, ZoneHandler, ZoneType,
};
use hickory_server::Server;

use super::runtime;

/// TTL of every generated record.
const TTL: u32 = 300;

/// Parses `name` as an absolute domain name (a missing final dot is added).
///
/// # Panics
/// On a name hickory cannot parse (a test-setup error).
pub fn fqdn(name: &str) -> Name {
    let text = if name.ends_with('.') {
        name.to_string()
    } else {
        format!("{name}.")
    };
    Name::from_ascii(&text).unwrap_or_else(|e| panic!("bad DNS name {name:?}: {e}"))
}

/// The records of one unsigned zone, plus the names that must answer SERVFAIL.
#[derive(Clone, Debug)]
pub struct ZoneBuilder {
    origin: Name,
    records: Vec<Record>,
    servfail: Vec<Name>,
}

impl ZoneBuilder {
    /// A zone rooted at `origin` with an SOA and an NS record at the apex.
    pub fn new(origin: &str) -> Self {
        let origin = fqdn(origin);
        let ns = origin
            .prepend_label("ns")
            .unwrap_or_else(|e| panic!("zone origin {origin} too long: {e}"));
        let hostmaster = origin
            .prepend_label("hostmaster")
            .unwrap_or_else(|e| panic!("zone origin {origin} too long: {e}"));
        // RFC 2308 §5: the SOA minimum caps negative caching; keep it short.
        let soa = SOA::new(ns.clone(), hostmaster, 1, 3600, 600, 86400, 60);
        let records = vec![
            Record::from_rdata(origin.clone(), TTL, RData::SOA(soa)),
            Record::from_rdata(origin.clone(), TTL, RData::NS(NS(ns))),
        ];
        Self {
            origin,
            records,
            servfail: Vec::new(),
        }
    }

    /// The zone's origin.
    pub fn origin(&self) -> &Name {
        &self.origin
    }

    /// The records added so far, SOA and NS included.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Names whose queries answer SERVFAIL.
    pub fn servfail_names(&self) -> &[Name] {
        &self.servfail
    }

    /// Adds any record; its owner must lie inside the zone.
    pub fn record(mut self, record: Record) -> Self {
        assert!(
            self.origin.zone_of(&record.name),
            "{} is outside zone {}",
            record.name,
            self.origin
        );
        self.records.push(record);
        self
    }

    fn rdata(self, name: &str, data: RData) -> Self {
        let record = Record::from_rdata(fqdn(name), TTL, data);
        self.record(record)
    }

    /// `name MX preference exchange`.
    pub fn mx(self, name: &str, preference: u16, exchange: &str) -> Self {
        self.rdata(name, RData::MX(MX::new(preference, fqdn(exchange))))
    }

    /// A null MX, `name MX 0 .` (RFC 7505 §3): the domain accepts no mail.
    pub fn null_mx(self, name: &str) -> Self {
        self.rdata(name, RData::MX(MX::new(0, Name::root())))
    }

    /// `name A ip`.
    pub fn a(self, name: &str, ip: &str) -> Self {
        let ip: Ipv4Addr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IPv4 address {ip:?}: {e}"));
        self.rdata(name, RData::A(A(ip)))
    }

    /// `name AAAA ip`.
    pub fn aaaa(self, name: &str, ip: &str) -> Self {
        let ip: Ipv6Addr = ip
            .parse()
            .unwrap_or_else(|e| panic!("bad IPv6 address {ip:?}: {e}"));
        self.rdata(name, RData::AAAA(AAAA(ip)))
    }

    /// `name CNAME target`.
    pub fn cname(self, name: &str, target: &str) -> Self {
        self.rdata(name, RData::CNAME(CNAME(fqdn(target))))
    }

    /// `name TLSA usage selector matching data` (RFC 6698 §2.1).
    pub fn tlsa(self, name: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) -> Self {
        let tlsa = TLSA::new(
            usage.into(),
            selector.into(),
            matching.into(),
            data.to_vec(),
        );
        self.rdata(name, RData::TLSA(tlsa))
    }

    /// `name TXT "text"` (one character-string; split if over 255 octets).
    pub fn txt(self, name: &str, text: &str) -> Self {
        let strings = text
            .as_bytes()
            .chunks(255)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        self.rdata(name, RData::TXT(TXT::new(strings)))
    }

    /// Queries for `name` or any name below it answer SERVFAIL, whichever
    /// zone they fall in.
    pub fn servfail_for(mut self, name: &str) -> Self {
        self.servfail.push(fqdn(name));
        self
    }

    /// An unsigned, authoritative zone handler holding the records.
    pub fn build(&self) -> InMemoryZoneHandler<TokioRuntimeProvider> {
        let mut zone = InMemoryZoneHandler::<TokioRuntimeProvider>::empty(
            self.origin.clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            None,
        );
        for record in &self.records {
            zone.upsert_mut(record.clone(), 1);
        }
        zone
    }
}

/// A running DNS server; it stops when dropped.
pub struct FakeDns {
    /// `127.0.0.1:port`, serving UDP and TCP.
    pub addr: SocketAddr,
    _server: Server<ServfailFilter>,
}

impl FakeDns {
    /// Serves the given unsigned zones.
    pub fn start(zones: Vec<ZoneBuilder>) -> Self {
        let servfail = zones
            .iter()
            .flat_map(|z| z.servfail.iter().cloned())
            .collect();
        let handlers = zones
            .iter()
            .map(|z| {
                let handler: Arc<dyn ZoneHandler> = Arc::new(z.build());
                (z.origin.clone(), handler)
            })
            .collect();
        Self::start_handlers(handlers, servfail)
    }

    /// Serves arbitrary zone handlers (for instance signed zones), with
    /// SERVFAIL for queries at or below any name in `servfail`.
    pub fn start_handlers(zones: Vec<(Name, Arc<dyn ZoneHandler>)>, servfail: Vec<Name>) -> Self {
        let mut catalog = Catalog::new();
        for (origin, handler) in zones {
            catalog.upsert(LowerName::from(origin), vec![handler]);
        }
        let filter = ServfailFilter {
            catalog,
            servfail: servfail.into_iter().map(LowerName::from).collect(),
        };
        let (addr, server) = serve(filter);
        Self {
            addr,
            _server: server,
        }
    }
}

/// Serves `handler` over UDP and TCP on one free port of 127.0.0.1, on the
/// shared test runtime; the server stops when dropped.
pub fn serve<H: RequestHandler>(handler: H) -> (SocketAddr, Server<H>) {
    let (udp, tcp) = bind_udp_and_tcp();
    let addr = udp.local_addr().expect("UDP socket address");
    let _guard = runtime().enter();
    let mut server = Server::new(handler);
    server.register_socket(tokio::net::UdpSocket::from_std(udp).expect("register UDP"));
    server.register_listener(
        tokio::net::TcpListener::from_std(tcp).expect("register TCP"),
        Duration::from_secs(5),
        4096,
    );
    (addr, server)
}

/// Binds UDP and TCP on the same free port of 127.0.0.1.
fn bind_udp_and_tcp() -> (UdpSocket, StdTcpListener) {
    for _ in 0..100 {
        let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind UDP on loopback");
        let port = udp.local_addr().expect("UDP address").port();
        if let Ok(tcp) = StdTcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            udp.set_nonblocking(true).expect("non-blocking UDP");
            tcp.set_nonblocking(true).expect("non-blocking TCP");
            return (udp, tcp);
        }
    }
    panic!("no port free for both UDP and TCP on 127.0.0.1 after 100 attempts");
}

/// Answers SERVFAIL for the configured names and passes every other request
/// to the catalog.
struct ServfailFilter {
    catalog: Catalog,
    servfail: Vec<LowerName>,
}

impl ServfailFilter {
    fn fails(&self, request: &Request) -> bool {
        request
            .queries
            .queries()
            .iter()
            .any(|q| self.servfail.iter().any(|s| s.zone_of(q.name())))
    }
}

/// Sends a SERVFAIL reply echoing the question.
pub(super) async fn send_servfail<R: ResponseHandler>(
    request: &Request,
    mut handle: R,
) -> ResponseInfo {
    let response = MessageResponseBuilder::new(&request.queries, None)
        .error_msg(&request.metadata, ResponseCode::ServFail);
    match handle.send_response(response).await {
        Ok(info) => info,
        Err(_) => {
            // The client is gone; report what was meant to be sent.
            let mut metadata = Metadata::response_from_request(&request.metadata);
            metadata.response_code = ResponseCode::ServFail;
            hickory_server::proto::op::Header {
                metadata,
                counts: Default::default(),
            }
            .into()
        }
    }
}

// `RequestHandler` is declared with `async_trait`; this is its expanded form,
// written out so the tests need no extra proc-macro dependency.
impl RequestHandler for ServfailFilter {
    fn handle_request<'a, 'b, 'f, R, T>(
        &'a self,
        request: &'b Request,
        response_handle: R,
    ) -> Pin<Box<dyn Future<Output = ResponseInfo> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        R: ResponseHandler + 'f,
        T: Time + 'f,
        Self: 'f,
    {
        Box::pin(async move {
            if self.fails(request) {
                send_servfail(request, response_handle).await
            } else {
                self.catalog
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        })
    }
}
