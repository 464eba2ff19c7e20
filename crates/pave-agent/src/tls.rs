//! TLS for the channel between the control plane and remote agents.
//!
//! Agents dial out across networks we do not control, so the channel is always
//! encrypted and the agent must authenticate the server before sending
//! anything. Running a public CA for that is overkill: `pave serve` can make
//! its own CA once and keep it, and an agent can then trust it either through
//! `ca.pem` or by pinning its SHA-256 fingerprint, which is short enough to
//! paste on a command line.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::UnixTime;
use rustls::pki_types::{CertificateDer, DnsName, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{DigitallySignedStruct, OtherError, RootCertStore, SignatureScheme};
use sha2::{Digest, Sha256};

const CA_CERT_FILE: &str = "ca.pem";
const CA_KEY_FILE: &str = "ca.key";
const SERVER_CERT_FILE: &str = "server.pem";
const SERVER_KEY_FILE: &str = "server.key";
const CA_COMMON_NAME: &str = "pave agent CA";
const SERVER_COMMON_NAME: &str = "pave server";
const FINGERPRINT_PREFIX: &str = "sha256:";

const DAY_SECS: i64 = 24 * 60 * 60;
/// Lifetime of the generated CA: its fingerprint is what agents pin.
const CA_LIFETIME_SECS: i64 = 20 * 365 * DAY_SECS;
/// Lifetime of a generated server certificate; a new one is issued at every start.
const SERVER_LIFETIME_SECS: i64 = 365 * DAY_SECS;
/// Certificates are back-dated this much to tolerate clock skew between hosts.
const BACKDATE_SECS: i64 = DAY_SECS;

/// What can go wrong setting up TLS for the agent channel.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{} is not a valid PEM file: {reason}", path.display())]
    Pem { path: PathBuf, reason: String },
    #[error(
        "{} contains no certificate (expected a PEM block \"-----BEGIN CERTIFICATE-----\")",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "{} contains no private key (expected a PEM block such as \"-----BEGIN PRIVATE KEY-----\")",
        path.display()
    )]
    NoPrivateKey { path: PathBuf },
    #[error("{} contains a certificate that cannot be used as a CA: {source}", path.display())]
    BadCaCertificate {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{} is not a usable CA private key: {source}", path.display())]
    BadCaKey {
        path: PathBuf,
        #[source]
        source: rcgen::Error,
    },
    #[error(
        "the certificate in {} and the private key in {} cannot be used together: {source}",
        cert.display(),
        key.display()
    )]
    BadIdentity {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error(
        "found {} but not {}: remove {} to create a new CA (agents pinned to the old CA will need the new fingerprint)",
        present.display(),
        missing.display(),
        present.display()
    )]
    IncompleteCa { present: PathBuf, missing: PathBuf },
    #[error(
        "cannot use the CA in {}: {reason}; remove ca.pem and ca.key there to create a new CA (agents pinned to the old CA will need the new fingerprint)",
        dir.display()
    )]
    UnusableCa { dir: PathBuf, reason: String },
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("invalid subject alternative name {value:?}: expected an IP address or a DNS name")]
    InvalidSan { value: String },
    #[error("invalid CA fingerprint {input:?}: {reason} (expected \"sha256:\" followed by 64 hex digits)")]
    InvalidFingerprint { input: String, reason: String },
    #[error(
        "the server's certificates do not match the pinned CA fingerprint: expected {expected}, the server presented {}",
        describe_presented(presented)
    )]
    FingerprintMismatch {
        expected: String,
        presented: Vec<String>,
    },
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error(
        "refusing unencrypted URL {url}: ws:// is only allowed to a loopback address (127.0.0.0/8, ::1, localhost); use wss://"
    )]
    PlaintextNotLoopback { url: String },
    #[error("{url} is not a WebSocket URL: expected wss://HOST:PORT (or ws:// to a loopback address)")]
    UnsupportedScheme { url: String },
    #[error("cannot set up TLS: {0}")]
    Rustls(#[source] rustls::Error),
    #[error("the system clock is unusable for issuing certificates: {0}")]
    Clock(String),
}

fn describe_presented(presented: &[String]) -> String {
    match presented.split_first() {
        Some((end_entity, [])) => format!("only its own certificate {end_entity}"),
        Some((end_entity, rest)) => {
            format!("{end_entity} (its own certificate), {}", rest.join(", "))
        }
        None => "no certificate".to_string(),
    }
}

/// The control plane's TLS identity for the agent listener.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub config: Arc<rustls::ServerConfig>,
    /// PEM of the CA that agents can trust (`--ca-file`); `Some` only when pave generated it.
    pub ca_pem: Option<String>,
    /// Fingerprint agents can pin (`--ca-fingerprint`), see [`fingerprint_of_der`].
    pub fingerprint: String,
}

impl ServerTls {
    /// Uses (creating it on first call) a CA persisted in `dir` and issues a
    /// fresh server certificate from it, valid for localhost, the loopback
    /// addresses, this machine's hostname and `extra_sans` (IP addresses or DNS
    /// names).
    pub fn generated(dir: &Path, extra_sans: &[String]) -> Result<ServerTls, TlsError> {
        let sans = server_sans(extra_sans)?;
        create_private_dir(dir)?;
        let now = now_secs()?;
        let ca = load_or_create_ca(dir, now)?;

        let server_key = KeyPair::generate().map_err(|source| TlsError::Generate {
            what: "the server key",
            source,
        })?;
        let mut params = CertificateParams::default();
        params.distinguished_name = distinguished_name(SERVER_COMMON_NAME);
        params.subject_alt_names = sans;
        params.is_ca = IsCa::NoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.not_before = timestamp(now - BACKDATE_SECS)?;
        params.not_after = timestamp(now + SERVER_LIFETIME_SECS)?;
        // Only the CA's name, key identifier method and key usages matter to
        // the issuer; they are rebuilt by the same code that made the CA, and
        // the check below catches a CA made any other way.
        let issuer = Issuer::new(ca_params(), ca.key);
        let cert = params
            .signed_by(&server_key, &issuer)
            .map_err(|source| TlsError::Generate {
                what: "the server certificate",
                source,
            })?;

        let chain = vec![cert.der().clone(), ca.der.clone()];
        check_issued_by(dir, &chain, &ca.der)?;

        let cert_path = dir.join(SERVER_CERT_FILE);
        let key_path = dir.join(SERVER_KEY_FILE);
        let mut chain_pem = cert.pem();
        if !chain_pem.ends_with('\n') {
            chain_pem.push('\n');
        }
        chain_pem.push_str(&ca.pem);
        write_file(&cert_path, chain_pem.as_bytes(), 0o644)?;
        write_file(&key_path, server_key.serialize_pem().as_bytes(), 0o600)?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der()));
        let config = server_config(chain, key).map_err(|source| TlsError::BadIdentity {
            cert: cert_path,
            key: key_path,
            source,
        })?;
        Ok(ServerTls {
            config,
            ca_pem: Some(ca.pem),
            fingerprint: fingerprint_of_der(&ca.der),
        })
    }

    /// Uses a certificate chain and key given by the operator (`--tls-cert`,
    /// `--tls-key`). The chain is served as it is in the file; the fingerprint
    /// is that of its last certificate.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls, TlsError> {
        let chain = read_certs(cert)?;
        let fingerprint = match chain.last() {
            Some(last) => fingerprint_of_der(last),
            None => {
                return Err(TlsError::NoCertificate {
                    path: cert.to_path_buf(),
                })
            }
        };
        let private_key = read_key(key)?;
        let config = server_config(chain, private_key).map_err(|source| TlsError::BadIdentity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            source,
        })?;
        Ok(ServerTls {
            config,
            ca_pem: None,
            fingerprint,
        })
    }
}

/// How an agent decides to trust the control plane.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaPin {
    /// Trust only the certificates in this PEM file (`--ca-file`).
    File(PathBuf),
    /// Trust a server whose chain contains the certificate with this
    /// fingerprint (`--ca-fingerprint`).
    Fingerprint(String),
}

/// `sha256:` followed by the lowercase hex SHA-256 of a certificate's DER.
pub fn fingerprint_of_der(der: &[u8]) -> String {
    format!("{FINGERPRINT_PREFIX}{}", hex::encode(Sha256::digest(der)))
}

/// Normalises a user-supplied fingerprint to the [`fingerprint_of_der`]
/// form: the `sha256:` prefix is optional, case does not matter and colons
/// between the digits are allowed.
pub fn normalize_fingerprint(input: &str) -> Result<String, TlsError> {
    let trimmed = input.trim();
    let digits_part = match trimmed.split_at_checked(FINGERPRINT_PREFIX.len()) {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case(FINGERPRINT_PREFIX) => rest,
        _ => trimmed,
    };
    let digits: String = digits_part
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    let invalid = |reason: String| TlsError::InvalidFingerprint {
        input: input.to_string(),
        reason,
    };
    if let Some(bad) = digits.chars().find(|c| !c.is_ascii_hexdigit()) {
        return Err(invalid(format!("{bad:?} is not a hex digit")));
    }
    if digits.len() != 64 {
        return Err(invalid(format!(
            "it has {} hex digits, a SHA-256 fingerprint has 64",
            digits.len()
        )));
    }
    Ok(format!("{FINGERPRINT_PREFIX}{digits}"))
}

/// Client configuration for an agent dialing the control plane.
pub fn client_config(pin: &CaPin) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let provider = ring_provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Rustls)?;
    let config = match pin {
        CaPin::File(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(path)? {
                roots.add(cert).map_err(|source| TlsError::BadCaCertificate {
                    path: path.clone(),
                    source,
                })?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        CaPin::Fingerprint(fingerprint) => {
            let expected = normalize_fingerprint(fingerprint)?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(FingerprintVerifier { expected, provider }))
                .with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

/// Refuses URLs that would send the agent channel in clear over a network:
/// `wss://` is always fine, `ws://` only to a loopback host.
pub fn check_plain_url(url: &str) -> Result<(), TlsError> {
    let parsed = url::Url::parse(url).map_err(|e| TlsError::InvalidUrl {
        url: url.to_string(),
        reason: e.to_string(),
    })?;
    match parsed.scheme() {
        "wss" => Ok(()),
        "ws" if is_loopback_host(parsed.host()) => Ok(()),
        "ws" => Err(TlsError::PlaintextNotLoopback { url: url.to_string() }),
        _ => Err(TlsError::UnsupportedScheme { url: url.to_string() }),
    }
}

fn is_loopback_host(host: Option<url::Host<&str>>) -> bool {
    match host {
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost") || name.eq_ignore_ascii_case("localhost.")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        None => false,
    }
}

/// Accepts a server whose presented chain contains the pinned certificate and
/// whose end-entity certificate verifies with that certificate as sole root.
#[derive(Debug)]
struct FingerprintVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let presented: Vec<(&CertificateDer<'_>, String)> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|cert| (cert, fingerprint_of_der(cert)))
            .collect();
        let Some((pinned, _)) = presented.iter().find(|(_, fp)| *fp == self.expected) else {
            let mismatch = TlsError::FingerprintMismatch {
                expected: self.expected.clone(),
                presented: presented.into_iter().map(|(_, fp)| fp).collect(),
            };
            // Not InvalidCertificate(Other): that one displays with Debug.
            return Err(rustls::Error::Other(OtherError(Arc::new(mismatch))));
        };
        let mut roots = RootCertStore::empty();
        roots.add((*pinned).clone().into_owned())?;
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| {
                rustls::Error::General(format!(
                    "cannot verify against the pinned certificate {}: {e}",
                    self.expected
                ))
            })?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn ring_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::ServerConfig>, rustls::Error> {
    let config = rustls::ServerConfig::builder_with_provider(ring_provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

struct Ca {
    der: CertificateDer<'static>,
    pem: String,
    key: KeyPair,
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

/// The CA's parameters apart from validity; also used to rebuild the issuer
/// from a persisted CA, so they must not change.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(CA_COMMON_NAME);
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn load_or_create_ca(dir: &Path, now: i64) -> Result<Ca, TlsError> {
    let cert_path = dir.join(CA_CERT_FILE);
    let key_path = dir.join(CA_KEY_FILE);
    match (exists(&cert_path)?, exists(&key_path)?) {
        (true, true) => {
            let pem = read_to_string(&cert_path)?;
            let der = match CertificateDer::pem_slice_iter(pem.as_bytes()).next() {
                Some(Ok(der)) => der,
                Some(Err(e)) => return Err(pem_error(&cert_path, e)),
                None => return Err(TlsError::NoCertificate { path: cert_path }),
            };
            let key_pem = read_to_string(&key_path)?;
            let key = KeyPair::from_pem(&key_pem).map_err(|source| TlsError::BadCaKey {
                path: key_path,
                source,
            })?;
            Ok(Ca { der, pem, key })
        }
        (false, false) => {
            let key = KeyPair::generate().map_err(|source| TlsError::Generate {
                what: "the CA key",
                source,
            })?;
            let mut params = ca_params();
            params.not_before = timestamp(now - BACKDATE_SECS)?;
            params.not_after = timestamp(now + CA_LIFETIME_SECS)?;
            let cert = params.self_signed(&key).map_err(|source| TlsError::Generate {
                what: "the CA certificate",
                source,
            })?;
            let pem = cert.pem();
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&cert_path, pem.as_bytes(), 0o644)?;
            Ok(Ca {
                der: cert.der().clone(),
                pem,
                key,
            })
        }
        (true, false) => Err(TlsError::IncompleteCa {
            present: cert_path,
            missing: key_path,
        }),
        (false, true) => Err(TlsError::IncompleteCa {
            present: key_path,
            missing: cert_path,
        }),
    }
}

/// Checks that a freshly issued chain verifies against the persisted CA, which
/// fails if `ca.key` does not belong to `ca.pem` or the CA was not made by us.
fn check_issued_by(
    dir: &Path,
    chain: &[CertificateDer<'static>],
    ca: &CertificateDer<'static>,
) -> Result<(), TlsError> {
    let unusable = |reason: String| TlsError::UnusableCa {
        dir: dir.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| unusable(format!("{CA_CERT_FILE} is not a usable CA certificate ({e})")))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), ring_provider())
        .build()
        .map_err(|e| unusable(e.to_string()))?;
    let Some((end_entity, intermediates)) = chain.split_first() else {
        return Err(unusable("no certificate was issued".to_string()));
    };
    let name = ServerName::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST).into());
    verifier
        .verify_server_cert(end_entity, intermediates, &name, &[], UnixTime::now())
        .map_err(|e| {
            unusable(format!(
                "a certificate signed with {CA_KEY_FILE} does not verify against {CA_CERT_FILE} ({e})"
            ))
        })?;
    Ok(())
}

/// SANs of the generated server certificate, deduplicated.
fn server_sans(extra: &[String]) -> Result<Vec<SanType>, TlsError> {
    let mut seen = HashSet::new();
    let mut sans = Vec::new();
    for builtin in ["localhost", "127.0.0.1", "::1"] {
        if let Some(san) = parse_san(builtin) {
            push_san(&mut sans, &mut seen, san);
        }
    }
    match hostname() {
        Some(host) => match parse_san(&host) {
            Some(san) => push_san(&mut sans, &mut seen, san),
            None => tracing::warn!(
                hostname = %host,
                "the hostname is not a valid DNS name; leaving it out of the agent TLS certificate"
            ),
        },
        None => tracing::debug!("no hostname available for the agent TLS certificate"),
    }
    for value in extra {
        let san = parse_san(value).ok_or_else(|| TlsError::InvalidSan { value: value.clone() })?;
        push_san(&mut sans, &mut seen, san);
    }
    Ok(sans)
}

fn push_san(sans: &mut Vec<SanType>, seen: &mut HashSet<String>, san: SanType) {
    let key = match &san {
        SanType::IpAddress(ip) => ip.to_string(),
        SanType::DnsName(name) => name.as_str().to_ascii_lowercase(),
        other => format!("{other:?}"),
    };
    if seen.insert(key) {
        sans.push(san);
    }
}

/// An IP address (brackets allowed around IPv6) or a DNS name, possibly with
/// a leading `*.` wildcard label.
fn parse_san(value: &str) -> Option<SanType> {
    let value = value.trim();
    let unbracketed = value
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(value);
    if let Ok(ip) = unbracketed.parse::<IpAddr>() {
        return Some(SanType::IpAddress(ip));
    }
    let base = value.strip_prefix("*.").unwrap_or(value);
    // DnsName rejects IP-looking and otherwise malformed names.
    DnsName::try_from(base).ok()?;
    value.to_string().try_into().ok().map(SanType::DnsName)
}

fn hostname() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = raw.trim();
    (!name.is_empty() && name != "(none)").then(|| name.to_string())
}

fn now_secs() -> Result<i64, TlsError> {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| TlsError::Clock(e.to_string()))?;
    i64::try_from(since_epoch.as_secs()).map_err(|e| TlsError::Clock(e.to_string()))
}

fn timestamp(secs: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(secs).map_err(|e| TlsError::Clock(e.to_string()))
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        other => pem_error(path, other),
    })
}

fn pem_error(path: &Path, err: pem::Error) -> TlsError {
    match err {
        pem::Error::Io(source) => TlsError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        },
        other => TlsError::Pem {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn read_to_string(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn exists(path: &Path) -> Result<bool, TlsError> {
    path.try_exists().map_err(|source| TlsError::Io {
        action: "check",
        path: path.to_path_buf(),
        source,
    })
}

fn create_private_dir(dir: &Path) -> Result<(), TlsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| TlsError::Io {
            action: "create directory",
            path: dir.to_path_buf(),
            source,
        })
}

/// Writes `data` to `path` through a temporary file and a rename, so a crash
/// never leaves a truncated certificate or key behind.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), TlsError> {
    let io_err = |action: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { action, path, source }
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove", &tmp)(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_err("create", &tmp))?;
    // The umask may have narrowed the mode; make it exact.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("set permissions on", &tmp))?;
    file.write_all(data).map_err(io_err("write", &tmp))?;
    file.sync_all().map_err(io_err("write", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(io_err("write", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    fn init() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    /// Runs one TLS connection over loopback: the client sends 5 bytes and
    /// returns what the server echoes back.
    async fn echo(
        server: Arc<rustls::ServerConfig>,
        client: Arc<rustls::ClientConfig>,
        name: &str,
    ) -> io::Result<Vec<u8>> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let acceptor = TlsAcceptor::from(server);
        let server_task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = acceptor.accept(tcp).await?;
            let mut buf = [0u8; 5];
            tls.read_exact(&mut buf).await?;
            tls.write_all(&buf).await?;
            tls.shutdown().await?;
            Ok::<_, io::Error>(())
        });
        let server_name = ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let tcp = TcpStream::connect(addr).await?;
        let mut tls = TlsConnector::from(client).connect(server_name, tcp).await?;
        tls.write_all(b"hello").await?;
        tls.flush().await?;
        let mut buf = vec![0u8; 5];
        tls.read_exact(&mut buf).await?;
        server_task.await.map_err(io::Error::other)??;
        Ok(buf)
    }

    #[tokio::test]
    async fn generated_ca_file_pin_handshakes_and_echoes() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let server = ServerTls::generated(tmp.path(), &[]).unwrap();
        let client = client_config(&CaPin::File(tmp.path().join("ca.pem"))).unwrap();
        let got = echo(server.config.clone(), client, "localhost").await.unwrap();
        assert_eq!(got, b"hello");
        let client = client_config(&CaPin::File(tmp.path().join("ca.pem"))).unwrap();
        let got = echo(server.config, client, "127.0.0.1").await.unwrap();
        assert_eq!(got, b"hello");
        assert!(server.ca_pem.unwrap().contains("BEGIN CERTIFICATE"));
    }

    #[tokio::test]
    async fn other_ca_file_is_refused() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let server = ServerTls::generated(tmp.path(), &[]).unwrap();
        ServerTls::generated(other.path(), &[]).unwrap();
        let client = client_config(&CaPin::File(other.path().join("ca.pem"))).unwrap();
        let err = echo(server.config, client, "localhost").await.unwrap_err();
        assert!(err.to_string().contains("invalid peer certificate"), "{err}");
    }

    #[tokio::test]
    async fn fingerprint_pin() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let server = ServerTls::generated(tmp.path(), &[]).unwrap();
        let variants = [
            server.fingerprint.clone(),
            server.fingerprint.trim_start_matches("sha256:").to_uppercase(),
            format!(
                "SHA256:{}",
                hex::encode_upper(hex::decode(server.fingerprint.trim_start_matches("sha256:")).unwrap())
                    .as_bytes()
                    .chunks(2)
                    .map(|c| std::str::from_utf8(c).unwrap())
                    .collect::<Vec<_>>()
                    .join(":")
            ),
        ];
        for pin in variants {
            let client = client_config(&CaPin::Fingerprint(pin.clone())).unwrap();
            let got = echo(server.config.clone(), client, "localhost").await;
            assert_eq!(got.unwrap(), b"hello", "pin {pin}");
        }
        // Right CA, wrong name: still verified.
        let client = client_config(&CaPin::Fingerprint(server.fingerprint.clone())).unwrap();
        let err = echo(server.config.clone(), client, "example.com").await;
        assert!(err.is_err());
    }

    #[tokio::test]
    async fn wrong_fingerprint_names_both() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let server = ServerTls::generated(tmp.path(), &[]).unwrap();
        let wrong = ServerTls::generated(other.path(), &[]).unwrap().fingerprint;
        let client = client_config(&CaPin::Fingerprint(wrong.clone())).unwrap();
        let err = echo(server.config, client, "localhost")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("do not match the pinned CA fingerprint"), "{err}");
        assert!(err.contains(&wrong), "{err}");
        assert!(err.contains(&server.fingerprint), "{err}");
    }

    #[test]
    fn generated_is_stable_and_keys_are_private() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let first = ServerTls::generated(&dir, &[]).unwrap();
        let server_pem = fs::read(dir.join("server.pem")).unwrap();
        let second = ServerTls::generated(&dir, &[]).unwrap();
        assert_eq!(first.fingerprint, second.fingerprint);
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_ne!(server_pem, fs::read(dir.join("server.pem")).unwrap());
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join("ca.key")), 0o600);
        assert_eq!(mode_of(&dir.join("server.key")), 0o600);
        let ca_der = CertificateDer::from_pem_file(dir.join("ca.pem")).unwrap();
        assert_eq!(fingerprint_of_der(&ca_der), first.fingerprint);
        assert!(first.fingerprint.starts_with("sha256:"));
        assert_eq!(first.fingerprint.len(), 7 + 64);
    }

    #[tokio::test]
    async fn from_files_serves_the_file_chain() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let generated = ServerTls::generated(tmp.path(), &[]).unwrap();
        let server =
            ServerTls::from_files(&tmp.path().join("server.pem"), &tmp.path().join("server.key")).unwrap();
        assert_eq!(server.fingerprint, generated.fingerprint);
        assert!(server.ca_pem.is_none());
        let client = client_config(&CaPin::Fingerprint(server.fingerprint.clone())).unwrap();
        assert_eq!(echo(server.config, client, "localhost").await.unwrap(), b"hello");
    }

    #[test]
    fn from_files_errors_name_the_file() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        ServerTls::generated(tmp.path(), &[]).unwrap();
        let missing = tmp.path().join("nope.pem");
        let err = ServerTls::from_files(&missing, &tmp.path().join("server.key")).unwrap_err();
        assert!(err.to_string().contains("nope.pem"), "{err}");
        // A key that is not the certificate's.
        let err =
            ServerTls::from_files(&tmp.path().join("server.pem"), &tmp.path().join("ca.key")).unwrap_err();
        assert!(matches!(err, TlsError::BadIdentity { .. }), "{err}");
        // A certificate file given as the key.
        let err =
            ServerTls::from_files(&tmp.path().join("server.pem"), &tmp.path().join("ca.pem")).unwrap_err();
        assert!(err.to_string().contains("no private key"), "{err}");
        let err = client_config(&CaPin::File(tmp.path().join("server.key"))).unwrap_err();
        assert!(err.to_string().contains("contains no certificate"), "{err}");
    }

    #[test]
    fn incomplete_ca_is_not_overwritten() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        ServerTls::generated(tmp.path(), &[]).unwrap();
        fs::remove_file(tmp.path().join("ca.pem")).unwrap();
        let err = ServerTls::generated(tmp.path(), &[]).unwrap_err();
        assert!(matches!(err, TlsError::IncompleteCa { .. }), "{err}");
        assert!(tmp.path().join("ca.key").exists());
    }

    #[test]
    fn mismatched_ca_key_is_detected() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        ServerTls::generated(tmp.path(), &[]).unwrap();
        ServerTls::generated(other.path(), &[]).unwrap();
        fs::copy(other.path().join("ca.key"), tmp.path().join("ca.key")).unwrap();
        let err = ServerTls::generated(tmp.path(), &[]).unwrap_err();
        assert!(matches!(err, TlsError::UnusableCa { .. }), "{err}");
    }

    #[tokio::test]
    async fn extra_san_ip_is_served() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        let sans = ["10.1.2.3".to_string(), "agents.example.com".to_string()];
        let server = ServerTls::generated(tmp.path(), &sans).unwrap();
        let pin = CaPin::File(tmp.path().join("ca.pem"));
        for name in ["10.1.2.3", "agents.example.com"] {
            let got = echo(server.config.clone(), client_config(&pin).unwrap(), name).await;
            assert_eq!(got.unwrap(), b"hello", "{name}");
        }
        let got = echo(server.config, client_config(&pin).unwrap(), "10.9.9.9").await;
        assert!(got.is_err());
    }

    #[test]
    fn invalid_sans_are_refused() {
        init();
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["", "not a name", "foo..bar"] {
            let err = ServerTls::generated(tmp.path(), &[bad.to_string()]).unwrap_err();
            assert!(matches!(err, TlsError::InvalidSan { .. }), "{bad:?}: {err}");
        }
        assert!(parse_san("[::1]").is_some());
        assert!(parse_san("*.example.com").is_some());
    }

    #[test]
    fn fingerprint_normalization() {
        let hex64 = "ab".repeat(32);
        let want = format!("sha256:{hex64}");
        assert_eq!(normalize_fingerprint(&hex64).unwrap(), want);
        assert_eq!(
            normalize_fingerprint(&format!("SHA256:{}", hex64.to_uppercase())).unwrap(),
            want
        );
        let colons = ["AB"; 32].join(":");
        assert_eq!(normalize_fingerprint(&colons).unwrap(), want);
        let err = normalize_fingerprint("sha256:abcd").unwrap_err().to_string();
        assert!(err.contains("4 hex digits"), "{err}");
        let err = normalize_fingerprint(&format!("md5:{hex64}")).unwrap_err();
        assert!(matches!(err, TlsError::InvalidFingerprint { .. }));
        assert!(client_config(&CaPin::Fingerprint("zz".into())).is_err());
    }

    #[test]
    fn plain_urls() {
        for ok in [
            "ws://127.0.0.1:7861",
            "ws://127.3.4.5/agent",
            "ws://[::1]:1",
            "ws://localhost",
            "ws://LOCALHOST:7861/x",
            "wss://10.0.0.1",
            "wss://example.com:7861/agent",
        ] {
            assert!(check_plain_url(ok).is_ok(), "{ok}");
        }
        for bad in ["ws://10.0.0.1:7861", "ws://example.com", "ws://[::2]:7861"] {
            let err = check_plain_url(bad).unwrap_err();
            assert!(matches!(err, TlsError::PlaintextNotLoopback { .. }), "{bad}");
            assert!(err.to_string().contains(bad), "{err}");
        }
        for bad in ["http://x", "https://127.0.0.1", "x", ""] {
            let err = check_plain_url(bad).unwrap_err();
            assert!(err.to_string().contains(bad), "{bad}: {err}");
        }
    }
}
