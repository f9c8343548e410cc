//! The two extensions rcgen cannot write the way sparring needs them, encoded by hand:
//! a *non-critical* name-constraints extension and an opaque padding extension.
//!
//! rcgen always marks name constraints critical (as RFC 5280 asks), but mbedTLS — the TLS
//! stack of ESP-IDF — does not implement name constraints and refuses to parse any
//! certificate with an unsupported critical extension (-0x2562, Mbed-TLS/mbedtls#8759). A
//! critical constraint would make the test root unusable on every real ESP board; marked
//! non-critical (as the CA/Browser Forum allows for exactly this reason) it is ignored by
//! mbedTLS and still enforced by rustls/webpki and OpenSSL.

use std::net::IpAddr;

use rcgen::CustomExtension;

/// id-ce-nameConstraints (2.5.29.30).
const NAME_CONSTRAINTS_OID: &[u64] = &[2, 5, 29, 30];

/// A non-critical name-constraints extension permitting exactly these DNS subtrees and
/// single IP addresses.
pub fn name_constraints(hosts: &[&str], ips: &[IpAddr]) -> CustomExtension {
    let mut subtrees = Vec::new();
    for host in hosts {
        // GeneralSubtree { base: dNSName [2] IMPLICIT IA5String }
        subtrees.extend(tlv(0x30, &tlv(0x82, host.as_bytes())));
    }
    for ip in ips {
        // GeneralSubtree { base: iPAddress [7] IMPLICIT OCTET STRING (address || mask) }
        let mut address_and_mask = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        address_and_mask.extend(std::iter::repeat_n(0xFF, address_and_mask.len()));
        subtrees.extend(tlv(0x30, &tlv(0x87, &address_and_mask)));
    }
    // NameConstraints ::= SEQUENCE { permittedSubtrees [0] IMPLICIT GeneralSubtrees }
    let value = tlv(0x30, &tlv(0xA0, &subtrees));
    let mut extension = CustomExtension::from_oid_content(NAME_CONSTRAINTS_OID, value);
    extension.set_criticality(false);
    extension
}

/// A DER OCTET STRING holding `content`.
pub fn octet_string(content: &[u8]) -> Vec<u8> {
    tlv(0x04, content)
}

/// Tag, DER length, value.
fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let len = value.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = (len as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_x509_parser_reads_back() {
        let ext = name_constraints(&["localhost"], &["127.0.0.1".parse().unwrap()]);
        assert!(!ext.criticality());
        use x509_parser::prelude::FromDer;
        let (_, parsed) =
            x509_parser::extensions::NameConstraints::from_der(ext.content()).unwrap();
        let permitted = parsed.permitted_subtrees.unwrap();
        assert_eq!(permitted.len(), 2);
        assert_eq!(format!("{}", permitted[0].base), "DNSName(localhost)");
    }

    #[test]
    fn long_values_get_multi_byte_lengths() {
        let value = octet_string(&[0u8; 300]);
        assert_eq!(&value[..4], &[0x04, 0x82, 0x01, 0x2C]);
        assert_eq!(value.len(), 304);
    }
}
