//! Generates the whole test PKI in memory: CAs, every profile's chain and key, the CRL.

use std::net::IpAddr;
use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, CertifiedIssuer,
    CustomExtension, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod,
    KeyPair, KeyUsagePurpose, RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

use crate::keys::{KeyKind, KeySource};
use crate::profiles::{PROFILES, Profile, Side};
use crate::{PkiError, der, weak};

/// The host name the `wrong-host` profile is issued for. It is inside the root's name
/// constraints, so the profile fails on the name and not on a constraint violation.
pub const WRONG_HOST: &str = "wrong-host.sparring.test";
/// The address the `wrong-ip` profile is issued for (TEST-NET-1, never a real host).
pub const WRONG_IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
/// Size of the padding extension that makes `large-chain` exceed 16 KiB, the default
/// mbedTLS input buffer of ESP-IDF.
const LARGE_CHAIN_PADDING: usize = 17 * 1024;
/// A private-use OID for that padding (non-critical, so every verifier ignores it).
const PADDING_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 55555, 1, 1];

/// What `sparring certs` is asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// DNS names of the broker / OTA server, as devices reach them.
    pub hosts: Vec<String>,
    /// IP addresses of the broker / OTA server.
    pub ips: Vec<IpAddr>,
    /// CN of the device certificate (and the MQTT client id a CN policy expects).
    pub device_id: String,
    /// Key kind of every certificate except the `rsa-4096` and `rsa-1024` leaves and the
    /// RSA-2048 intermediate that signs `sha1-signature`.
    pub key: KeyKind,
    /// Where RSA keys are cached across runs (`None`: never cached).
    pub key_cache: Option<PathBuf>,
    /// The moment validity windows are computed from.
    pub now: OffsetDateTime,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            // The broker's lab name first: it is the leaves' CN, which `cn-only` relies on (a
            // CN-only certificate must name the host the device dials for mbedTLS's fallback
            // to the CN to be what is tested).
            hosts: ["broker.sparring.test", "localhost", "ota.sparring.test"]
                .map(String::from)
                .to_vec(),
            ips: vec![IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
            device_id: "sparring-dut-1".to_owned(),
            key: KeyKind::EcP256,
            key_cache: KeySource::default_cache_dir(),
            now: OffsetDateTime::now_utc(),
        }
    }
}

impl Options {
    /// Checks what a user typed before anything is generated.
    pub fn validate(&self) -> Result<(), PkiError> {
        if self.hosts.is_empty() && self.ips.is_empty() {
            return Err(PkiError::InvalidOption(
                "at least one --host or --ip is needed for the server certificate".into(),
            ));
        }
        for host in &self.hosts {
            if rustls_pki_types::DnsName::try_from(host.as_str()).is_err()
                || host.parse::<IpAddr>().is_ok()
            {
                return Err(PkiError::InvalidOption(format!(
                    "--host {host:?} is not a valid DNS name (use --ip for addresses)"
                )));
            }
        }
        let id = &self.device_id;
        if id.is_empty() || id.len() > 64 || id.chars().any(|c| c.is_control()) {
            return Err(PkiError::InvalidOption(format!(
                "--device-id {id:?} must be 1 to 64 printable characters (it becomes the certificate CN)"
            )));
        }
        Ok(())
    }
}

/// A certificate chain and its key, ready to present in a handshake.
#[derive(Debug)]
pub struct Material {
    /// The profile's own end-entity certificate.
    pub leaf: CertificateDer<'static>,
    /// In the order it is presented: end entity first (except in `reversed-chain`).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivatePkcs8KeyDer<'static>,
}

/// A CA: its certificate and key.
pub struct Authority {
    pub issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    pub fn cert(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn key(&self) -> PrivatePkcs8KeyDer<'static> {
        PrivatePkcs8KeyDer::from(self.issuer.key().serialize_der())
    }
}

/// The whole PKI, in memory.
pub struct Pki {
    pub options: Options,
    pub root: Authority,
    pub intermediate: Authority,
    /// A second root nobody trusts (`untrusted-root`, `device-untrusted`).
    pub unrelated_root: Authority,
    /// The intermediate's CRL, listing the `revoked` and `device-revoked` serials.
    pub crl: Vec<u8>,
    pub crl_pem: String,
    /// Every profile of [`PROFILES`], in that order.
    pub profiles: Vec<(&'static Profile, Material)>,
}

impl Pki {
    /// Generates everything. Deterministic except for keys and serials.
    pub fn generate(options: Options) -> Result<Pki, PkiError> {
        options.validate()?;
        Factory::new(options).build()
    }

    /// The material of one profile.
    pub fn material(&self, name: &str) -> Option<&Material> {
        self.profiles
            .iter()
            .find(|(p, _)| p.name == name)
            .map(|(_, m)| m)
    }
}

struct Factory {
    options: Options,
    keys: KeySource,
    next_serial: u64,
}

impl Factory {
    fn new(options: Options) -> Self {
        // Serials start from the time so that two generated sets rarely share one.
        let base = u64::try_from(options.now.unix_timestamp()).unwrap_or(1) << 16;
        let keys = KeySource::new(options.key_cache.clone());
        Factory {
            options,
            keys,
            next_serial: base,
        }
    }

    fn build(mut self) -> Result<Pki, PkiError> {
        let now = self.options.now;
        let root = self.root("sparring test root CA", true)?;
        let unrelated_root = self.root("sparring unrelated root CA", false)?;
        let intermediate = self.intermediate(
            "sparring test intermediate CA",
            &root,
            intermediate_validity(now),
            self.options.key,
        )?;

        let mut revoked = Vec::new();
        let mut profiles = Vec::new();
        for profile in PROFILES {
            let (material, serial) =
                self.profile(profile, &root, &intermediate, &unrelated_root)?;
            if matches!(profile.name, "revoked" | "device-revoked") {
                revoked.push(serial);
            }
            profiles.push((profile, material));
        }

        let crl = CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(365),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .into_iter()
                .map(|serial| RevokedCertParams {
                    serial_number: serial,
                    revocation_time: now - Duration::hours(1),
                    reason_code: Some(RevocationReason::KeyCompromise),
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&intermediate.issuer)
        .map_err(|e| PkiError::Sign("CRL".into(), e))?;
        let crl_pem = crl.pem().map_err(|e| PkiError::Sign("CRL".into(), e))?;

        Ok(Pki {
            crl: crl.der().to_vec(),
            crl_pem,
            options: self.options,
            root,
            intermediate,
            unrelated_root,
            profiles,
        })
    }

    fn serial(&mut self) -> SerialNumber {
        self.next_serial += 1;
        SerialNumber::from(self.next_serial)
    }

    fn key(&mut self) -> Result<KeyPair, PkiError> {
        self.keys.next(self.options.key)
    }

    fn base_params(
        &mut self,
        cn: &str,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> (CertificateParams, SerialNumber) {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "sparring test PKI");
        dn.push(DnType::CommonName, cn);
        params.distinguished_name = dn;
        params.not_before = not_before;
        params.not_after = not_after;
        let serial = self.serial();
        params.serial_number = Some(serial.clone());
        params.use_authority_key_identifier_extension = true;
        (params, serial)
    }

    /// A root CA. The trusted root is name-constrained to the configured hosts and IPs
    /// (plus the two deliberately wrong names the profiles use), so a leaked test root
    /// cannot vouch for any real site.
    fn root(&mut self, cn: &str, constrained: bool) -> Result<Authority, PkiError> {
        let now = self.options.now;
        let (mut params, _) =
            self.base_params(cn, now - Duration::days(1), now + Duration::days(10 * 365));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        if constrained {
            let hosts: Vec<&str> = self
                .options
                .hosts
                .iter()
                .map(String::as_str)
                .chain([WRONG_HOST])
                .collect();
            let ips: Vec<IpAddr> = self.options.ips.iter().copied().chain([WRONG_IP]).collect();
            params
                .custom_extensions
                .push(der::name_constraints(&hosts, &ips));
        }
        let key = self.key()?;
        let issuer =
            CertifiedIssuer::self_signed(params, key).map_err(|e| PkiError::Sign(cn.into(), e))?;
        Ok(Authority { issuer })
    }

    fn intermediate(
        &mut self,
        cn: &str,
        parent: &Authority,
        (not_before, not_after): (OffsetDateTime, OffsetDateTime),
        key_kind: KeyKind,
    ) -> Result<Authority, PkiError> {
        let (mut params, _) = self.base_params(cn, not_before, not_after);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = self.keys.next(key_kind)?;
        let issuer = CertifiedIssuer::signed_by(params, key, &parent.issuer)
            .map_err(|e| PkiError::Sign(cn.into(), e))?;
        Ok(Authority { issuer })
    }

    fn server_sans(&self) -> Vec<SanType> {
        self.dns_sans().into_iter().chain(self.ip_sans()).collect()
    }

    fn dns_sans(&self) -> Vec<SanType> {
        self.options
            .hosts
            .iter()
            .filter_map(|h| h.as_str().try_into().ok().map(SanType::DnsName))
            .collect()
    }

    fn ip_sans(&self) -> Vec<SanType> {
        self.options
            .ips
            .iter()
            .map(|ip| SanType::IpAddress(*ip))
            .collect()
    }

    /// Builds one profile; returns its material and the leaf's serial.
    fn profile(
        &mut self,
        profile: &Profile,
        root: &Authority,
        intermediate: &Authority,
        unrelated: &Authority,
    ) -> Result<(Material, SerialNumber), PkiError> {
        let now = self.options.now;
        let valid = (now - Duration::hours(1), now + Duration::days(365));
        let server_cn = self
            .options
            .hosts
            .first()
            .cloned()
            .or_else(|| self.options.ips.first().map(ToString::to_string))
            .unwrap_or_default();
        let device_id = self.options.device_id.clone();
        let mut leaf = LeafSpec {
            cn: server_cn.clone(),
            sans: self.server_sans(),
            validity: valid,
            eku: vec![ExtendedKeyUsagePurpose::ServerAuth],
            padding: 0,
            key_kind: self.options.key,
        };
        if profile.side == Side::Device {
            leaf.cn = device_id.clone();
            leaf.sans = vec![];
            leaf.eku = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        // (signing authority, certificates presented after the leaf)
        let mut signer = intermediate;
        let mut extra: Vec<CertificateDer<'static>> = vec![intermediate.cert()];
        let mut reverse = false;
        let mut self_signed = false;
        let mut mismatched_key = false;
        let mut weakness = None;
        let owned_signer;
        match profile.name {
            "valid" | "revoked" | "device-valid" | "device-revoked" => {}
            "expired" | "device-expired" => {
                leaf.validity = (now - Duration::days(2 * 365), now - Duration::days(1))
            }
            "not-yet-valid" => {
                leaf.validity = (now + Duration::days(365), now + Duration::days(2 * 365))
            }
            "wrong-host" => {
                leaf.cn = WRONG_HOST.into();
                leaf.sans = vec![SanType::DnsName(
                    WRONG_HOST
                        .try_into()
                        .map_err(|e| PkiError::Sign(WRONG_HOST.into(), e))?,
                )];
                leaf.sans.extend(self.ip_sans());
            }
            "wrong-ip" => {
                leaf.sans = self.dns_sans();
                leaf.sans.push(SanType::IpAddress(WRONG_IP));
            }
            "cn-only" => leaf.sans = vec![],
            "self-signed" => {
                self_signed = true;
                extra.clear();
            }
            "untrusted-root" | "device-untrusted" => {
                signer = unrelated;
                extra = vec![unrelated.cert()];
            }
            "missing-intermediate" => extra.clear(),
            "reversed-chain" => reverse = true,
            "intermediate-expired" => {
                owned_signer = self.intermediate(
                    "sparring expired intermediate CA",
                    root,
                    (now - Duration::days(3 * 365), now - Duration::days(30)),
                    self.options.key,
                )?;
                signer = &owned_signer;
                extra = vec![owned_signer.cert()];
            }
            "not-a-ca" => {
                owned_signer = self.not_a_ca(intermediate)?;
                signer = &owned_signer;
                extra = vec![owned_signer.cert(), intermediate.cert()];
            }
            "wrong-eku" => leaf.eku = vec![ExtendedKeyUsagePurpose::ClientAuth],
            "large-chain" => leaf.padding = LARGE_CHAIN_PADDING,
            "rsa-4096" => leaf.key_kind = KeyKind::Rsa4096,
            "sha1-signature" => {
                // SHA-1 takes an RSA signer (sha1WithRSAEncryption) and the lab's CAs may have
                // EC keys: a correct RSA-2048 intermediate of the lab root signs this leaf.
                // The leaf, not the intermediate, carries the weak signature: only the trust
                // anchor's own signature goes unchecked (mbedTLS `x509_crt_verify_chain`
                // stops at a trusted root), and the leaf is what any verifier checks first.
                owned_signer = self.intermediate(
                    "sparring RSA intermediate CA",
                    root,
                    intermediate_validity(now),
                    KeyKind::Rsa2048,
                )?;
                signer = &owned_signer;
                extra = vec![owned_signer.cert()];
                weakness = Some(Weakness::Sha1Signature);
            }
            "rsa-1024" => weakness = Some(Weakness::Rsa1024Key),
            "device-wrong-cn" => leaf.cn = format!("{device_id}-imposter"),
            "device-key-mismatch" => mismatched_key = true,
            other => {
                return Err(PkiError::InvalidOption(format!(
                    "profile {other} has no recipe"
                )));
            }
        }

        let key = self.keys.next(leaf.key_kind)?;
        let (mut params, serial) = self.base_params(&leaf.cn, leaf.validity.0, leaf.validity.1);
        params.subject_alt_names = leaf.sans;
        params.extended_key_usages = leaf.eku;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if leaf.padding > 0 {
            params
                .custom_extensions
                .push(CustomExtension::from_oid_content(
                    PADDING_OID,
                    der::octet_string(&vec![0x5A; leaf.padding]),
                ));
        }
        let issuer = &signer.issuer as &Issuer<'_, KeyPair>;
        let sign_error = |e| PkiError::Sign(profile.name.into(), e);
        let (leaf_der, key_der) = match weakness {
            _ if self_signed => (params.self_signed(&key).map_err(sign_error)?.into(), None),
            None => (
                params.signed_by(&key, issuer).map_err(sign_error)?.into(),
                None,
            ),
            Some(Weakness::Sha1Signature) => {
                let template = params.signed_by(&key, issuer).map_err(sign_error)?;
                (weak::sha1_twin(template.der(), &signer.key())?, None)
            }
            Some(Weakness::Rsa1024Key) => {
                let small = self.keys.rsa_1024()?;
                let public =
                    rcgen::SubjectPublicKeyInfo::from_der(&weak::rsa_public_key_info(&small)?)
                        .map_err(sign_error)?;
                let cert = params.signed_by(&public, issuer).map_err(sign_error)?;
                (cert.into(), Some(small))
            }
        };
        // The certified key, unless it is one rcgen cannot hold or another on purpose.
        let key_der = match key_der {
            Some(small) => small,
            None if mismatched_key => self.keys.next(leaf.key_kind)?.serialize_der().into(),
            None => key.serialize_der().into(),
        };
        let mut material = material(leaf_der, extra, key_der);
        if reverse {
            material.chain.reverse();
        }
        Ok((material, serial))
    }

    /// An end-entity certificate (no CA basic constraint) that is then misused to sign.
    fn not_a_ca(&mut self, parent: &Authority) -> Result<Authority, PkiError> {
        let now = self.options.now;
        let (mut params, _) = self.base_params(
            "sparring not-a-CA signer",
            now - Duration::hours(1),
            now + Duration::days(365),
        );
        params.is_ca = IsCa::ExplicitNoCa;
        let key = self.key()?;
        let issuer = CertifiedIssuer::signed_by(params, key, &parent.issuer)
            .map_err(|e| PkiError::Sign("not-a-ca signer".into(), e))?;
        Ok(Authority { issuer })
    }
}

/// A leaf presented with the certificates after it.
fn material(
    leaf: CertificateDer<'static>,
    after: Vec<CertificateDer<'static>>,
    key: PrivatePkcs8KeyDer<'static>,
) -> Material {
    let mut chain = vec![leaf.clone()];
    chain.extend(after);
    Material { leaf, chain, key }
}

/// Validity of the lab's intermediates.
fn intermediate_validity(now: OffsetDateTime) -> (OffsetDateTime, OffsetDateTime) {
    (now - Duration::days(1), now + Duration::days(5 * 365))
}

/// The weak-crypto profiles' one defect (see [`weak`] for how they are made).
#[derive(Clone, Copy)]
enum Weakness {
    Sha1Signature,
    Rsa1024Key,
}

struct LeafSpec {
    cn: String,
    sans: Vec<SanType>,
    validity: (OffsetDateTime, OffsetDateTime),
    eku: Vec<ExtendedKeyUsagePurpose>,
    padding: usize,
    key_kind: KeyKind,
}
