//! An in-process authoritative DNS server for a private, DNSSEC-signed root.
//!
//! The root zone is signed at start with an Ed25519 key generated for the
//! run; a resolver that trusts that key (see [`SignedDns::trust_anchor_file`])
//! validates everything below it without any real root server. Besides
//! names directly in the root (secure), [`SignedZones`] can add:
//!
//! * an unsigned child zone, delegated without a DS record; the root's NSEC
//!   proves the DS absent, so its answers are insecure (RFC 4035 §5.2);
//! * a signed child zone whose DS record in the root matches another key,
//!   so its answers are bogus;
//! * names that answer SERVFAIL.
//!
//! Signatures start an hour in the past and end days ahead, so clock
//! rounding between signer and validator never matters.
//!
//! One wrinkle: a catalog sends every query to the longest matching zone,
//! so `DS child.` would be answered by the child, which knows nothing of its
//! DS. [`SignedHandler`] sends DS queries for a child's apex to a catalog
//! that holds only the root, as a real parent server would answer them.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::dnssec::NxProofKind;
use hickory_server::net::runtime::{RuntimeProvider, Time, TokioRuntimeProvider, TokioTime};
use hickory_server::proto::dnssec::crypto::Ed25519SigningKey;
use hickory_server::proto::dnssec::rdata::{DNSSECRData, DNSKEY, DS};
use hickory_server::proto::dnssec::{DigestType, DnssecSigner, PublicKeyBuf, SigningKey};
use hickory_server::proto::rr::rdata::NS;
use hickory_server::proto::rr::{LowerName, Name, RData, Record, RecordType};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::store::in_memory::InMemoryZoneHandler;
use hickory_server::zone_handler::{AxfrPolicy, Catalog, ZoneHandler, ZoneType};
use hickory_server::Server;

use super::fake_dns::{fqdn, send_servfail, serve, ZoneBuilder};

/// TTL of the generated delegation records.
const TTL: u32 = 300;
/// How far in the past signatures start.
const BACKDATE: Duration = Duration::from_secs(3600);
/// How long signatures last from their start: they end a week ahead.
const SIG_DURATION: Duration = Duration::from_secs(8 * 24 * 3600);

/// How a child zone is delegated from the root.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChildKind {
    /// Unsigned, no DS in the root: insecure.
    Insecure,
    /// Signed, but the root's DS matches a different key: bogus.
    Bogus,
}

/// The zones to serve: the signed root and its children.
#[derive(Clone, Debug)]
pub struct SignedZones {
    root: ZoneBuilder,
    children: Vec<(ChildKind, ZoneBuilder)>,
    servfail: Vec<Name>,
}

impl Default for SignedZones {
    fn default() -> Self {
        Self::new()
    }
}

impl SignedZones {
    /// An empty signed root (SOA, NS and, once served, DNSKEY).
    pub fn new() -> Self {
        Self {
            root: ZoneBuilder::new("."),
            children: Vec::new(),
            servfail: Vec::new(),
        }
    }

    /// Adds any record to the signed root.
    pub fn record(mut self, record: Record) -> Self {
        self.root = self.root.record(record);
        self
    }

    /// `name MX preference exchange` in the signed root.
    pub fn mx(mut self, name: &str, preference: u16, exchange: &str) -> Self {
        self.root = self.root.mx(name, preference, exchange);
        self
    }

    /// `name A ip` in the signed root.
    pub fn a(mut self, name: &str, ip: &str) -> Self {
        self.root = self.root.a(name, ip);
        self
    }

    /// `name AAAA ip` in the signed root.
    pub fn aaaa(mut self, name: &str, ip: &str) -> Self {
        self.root = self.root.aaaa(name, ip);
        self
    }

    /// `name CNAME target` in the signed root.
    pub fn cname(mut self, name: &str, target: &str) -> Self {
        self.root = self.root.cname(name, target);
        self
    }

    /// `name TLSA usage selector matching data` in the signed root.
    pub fn tlsa(mut self, name: &str, usage: u8, selector: u8, matching: u8, data: &[u8]) -> Self {
        self.root = self.root.tlsa(name, usage, selector, matching, data);
        self
    }

    /// An unsigned child zone at `origin`, delegated without a DS record:
    /// its answers are insecure. `fill` adds its records.
    pub fn insecure_child(
        self,
        origin: &str,
        fill: impl FnOnce(ZoneBuilder) -> ZoneBuilder,
    ) -> Self {
        self.child(ChildKind::Insecure, origin, fill)
    }

    /// A signed child zone at `origin` whose DS record in the root does not
    /// match its key: its answers are bogus. `fill` adds its records.
    pub fn bogus_child(self, origin: &str, fill: impl FnOnce(ZoneBuilder) -> ZoneBuilder) -> Self {
        self.child(ChildKind::Bogus, origin, fill)
    }

    fn child(
        mut self,
        kind: ChildKind,
        origin: &str,
        fill: impl FnOnce(ZoneBuilder) -> ZoneBuilder,
    ) -> Self {
        let zone = fill(ZoneBuilder::new(origin));
        assert!(
            zone.origin().num_labels() == 1,
            "child zones sit directly below the root: {origin}"
        );
        // The delegation: NS in the parent (no glue: the stub resolver asks
        // this server for everything anyway).
        let ns = zone.origin().prepend_label("ns").expect("NS name");
        self.root = self.root.record(Record::from_rdata(
            zone.origin().clone(),
            TTL,
            RData::NS(NS(ns)),
        ));
        self.children.push((kind, zone));
        self
    }

    /// Queries for `name` or any name below it answer SERVFAIL.
    pub fn servfail_for(mut self, name: &str) -> Self {
        self.servfail.push(fqdn(name));
        self
    }
}

/// A zone key: the signing half and its DNSKEY.
struct ZoneKey {
    signing: Ed25519SigningKey,
    public: PublicKeyBuf,
}

impl ZoneKey {
    fn generate() -> Self {
        let der = Ed25519SigningKey::generate_pkcs8().expect("generate an Ed25519 key");
        let signing = Ed25519SigningKey::from_pkcs8(&der).expect("load the Ed25519 key");
        let public = signing.to_public_key().expect("the key's public half");
        Self { signing, public }
    }

    /// The DNSKEY record data (flags 257: zone key, SEP).
    fn dnskey(&self) -> DNSKEY {
        DNSKEY::from_key(&self.public)
    }

    /// A DS record for this key at `owner` (SHA-256, RFC 4509).
    fn ds(&self, owner: &Name) -> Record {
        let ds = DS::from_key(&self.public, owner, DigestType::SHA256).expect("compute a DS");
        Record::from_rdata(owner.clone(), TTL, RData::DNSSEC(DNSSECRData::DS(ds)))
    }

    /// `zone`'s records as a zone handler, signed with this key, with NSEC
    /// denial of existence.
    fn sign(self, zone: &ZoneBuilder) -> InMemoryZoneHandler<Backdated> {
        let mut handler = InMemoryZoneHandler::<Backdated>::empty(
            zone.origin().clone(),
            ZoneType::Primary,
            AxfrPolicy::Deny,
            Some(NxProofKind::Nsec),
        );
        for record in zone.records() {
            handler.upsert_mut(record.clone(), 1);
        }
        let signer = DnssecSigner::new(
            self.dnskey(),
            Box::new(self.signing),
            zone.origin().clone(),
            SIG_DURATION,
        );
        handler
            .add_zone_signing_key_mut(signer)
            .expect("add the zone key");
        handler.secure_zone_mut().expect("sign the zone");
        handler
    }
}

/// A running signed DNS server; it stops when dropped.
pub struct SignedDns {
    addr: SocketAddr,
    root_key: DNSKEY,
    _server: Server<SignedHandler>,
}

impl SignedDns {
    /// Signs and serves the zones on 127.0.0.1 (UDP and TCP, one port).
    pub fn start(zones: SignedZones) -> Self {
        let mut root = zones.root;
        let mut children: Vec<(Name, Arc<dyn ZoneHandler>)> = Vec::new();
        for (kind, zone) in &zones.children {
            let handler: Arc<dyn ZoneHandler> = match kind {
                ChildKind::Insecure => Arc::new(zone.build()),
                ChildKind::Bogus => {
                    // The parent vouches for a key the child never uses.
                    root = root.record(ZoneKey::generate().ds(zone.origin()));
                    Arc::new(ZoneKey::generate().sign(zone))
                }
            };
            children.push((zone.origin().clone(), handler));
        }
        let root_key = ZoneKey::generate();
        let root_dnskey = root_key.dnskey();
        let root: Arc<dyn ZoneHandler> = Arc::new(root_key.sign(&root));

        let mut parent = Catalog::new();
        parent.upsert(LowerName::from(Name::root()), vec![root.clone()]);
        let mut all = Catalog::new();
        all.upsert(LowerName::from(Name::root()), vec![root]);
        let mut apexes = Vec::new();
        for (origin, handler) in children {
            apexes.push(LowerName::from(&origin));
            all.upsert(LowerName::from(origin), vec![handler]);
        }
        let handler = SignedHandler {
            all,
            parent,
            apexes,
            servfail: zones.servfail.into_iter().map(LowerName::from).collect(),
        };
        let (addr, server) = serve(handler);
        Self {
            addr,
            root_key: root_dnskey,
            _server: server,
        }
    }

    /// `127.0.0.1:port`, serving UDP and TCP.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The root's DNSKEY as `dig DNSKEY .` prints it.
    pub fn root_dnskey(&self) -> String {
        format!(". {TTL} IN DNSKEY {}", self.root_key)
    }

    /// Writes the root's DNSKEY to `dir/root.key`, for `[dns] trust_anchor`.
    pub fn trust_anchor_file(&self, dir: &Path) -> PathBuf {
        let path = dir.join("root.key");
        let text = format!(
            "; the test root's key signing key\n{}\n",
            self.root_dnskey()
        );
        std::fs::write(&path, text).expect("write the trust anchor");
        path
    }

    /// Writes a DNSKEY that signs nothing here to `dir/wrong-root.key`.
    pub fn wrong_trust_anchor_file(dir: &Path) -> PathBuf {
        let path = dir.join("wrong-root.key");
        let key = ZoneKey::generate().dnskey();
        std::fs::write(&path, format!(". {TTL} IN DNSKEY {key}\n")).expect("write the anchor");
        path
    }
}

/// Routes requests: SERVFAIL for the configured names, DS queries for a
/// child's apex to the root alone, everything else to the longest
/// matching zone.
struct SignedHandler {
    all: Catalog,
    parent: Catalog,
    apexes: Vec<LowerName>,
    servfail: Vec<LowerName>,
}

impl SignedHandler {
    fn fails(&self, request: &Request) -> bool {
        request
            .queries
            .queries()
            .iter()
            .any(|q| self.servfail.iter().any(|s| s.zone_of(q.name())))
    }

    fn asks_parent(&self, request: &Request) -> bool {
        request
            .queries
            .queries()
            .iter()
            .any(|q| q.query_type() == RecordType::DS && self.apexes.iter().any(|a| a == q.name()))
    }
}

// `RequestHandler` is declared with `async_trait`; this is its expanded
// form, as in `fake_dns`.
impl RequestHandler for SignedHandler {
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
            } else if self.asks_parent(request) {
                self.parent
                    .handle_request::<R, T>(request, response_handle)
                    .await
            } else {
                self.all
                    .handle_request::<R, T>(request, response_handle)
                    .await
            }
        })
    }
}

/// The tokio runtime with a clock an hour slow, so that the zone signer
/// (which reads the time from its runtime) dates signatures in the past.
#[derive(Clone, Default)]
struct Backdated(TokioRuntimeProvider);

impl RuntimeProvider for Backdated {
    type Handle = <TokioRuntimeProvider as RuntimeProvider>::Handle;
    type Timer = BackdatedTime;
    type Udp = <TokioRuntimeProvider as RuntimeProvider>::Udp;
    type Tcp = <TokioRuntimeProvider as RuntimeProvider>::Tcp;

    fn create_handle(&self) -> Self::Handle {
        self.0.create_handle()
    }

    fn connect_tcp(
        &self,
        server_addr: SocketAddr,
        bind_addr: Option<SocketAddr>,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Tcp, io::Error>>>> {
        self.0.connect_tcp(server_addr, bind_addr, timeout)
    }

    fn bind_udp(
        &self,
        local_addr: SocketAddr,
        server_addr: SocketAddr,
    ) -> Pin<Box<dyn Send + Future<Output = Result<Self::Udp, io::Error>>>> {
        self.0.bind_udp(local_addr, server_addr)
    }
}

/// Tokio's timers, with `current_time` moved back by [`BACKDATE`].
struct BackdatedTime;

#[async_trait::async_trait]
impl Time for BackdatedTime {
    async fn delay_for(duration: Duration) {
        TokioTime::delay_for(duration).await
    }

    async fn timeout<F: 'static + Future + Send>(
        duration: Duration,
        future: F,
    ) -> Result<F::Output, io::Error> {
        TokioTime::timeout(duration, future).await
    }

    fn current_time() -> u64 {
        TokioTime::current_time() - BACKDATE.as_secs()
    }
}
