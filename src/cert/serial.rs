//! Certificate serial numbers. Catching a revoked certificate rests on the certificate, the
//! CRL index, the store key and the CLI comparing the same bytes, so all of them go through
//! [`Serial`]: one canonical form, one parser, one spelling.

use std::fmt;
use std::str::FromStr;

/// A certificate serial number: the content of its DER INTEGER without leading zero bytes.
///
/// Displays as lowercase hex with an even number of digits (`0a1b`), the form of the store
/// key and the serial header.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Box<[u8]>);

impl Serial {
    /// From the content octets of a DER INTEGER (sign padding allowed).
    pub fn from_der_content(raw: &[u8]) -> Serial {
        Serial(Serial::canonical(raw).into())
    }

    /// The canonical form of a serial's DER INTEGER content, without allocating: no leading
    /// zero bytes (one stays for the serial 0).
    ///
    /// Stripping every leading zero byte would let `00 80` (+128) and `80` (−128, which
    /// RFC 5280 forbids) be one serial; the only consequence is a deny of the negative serial,
    /// never an allow.
    pub(crate) fn canonical(der_content: &[u8]) -> &[u8] {
        let start = der_content
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(der_content.len().saturating_sub(1));
        &der_content[start..]
    }

    /// The canonical bytes.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Per check this spells the serial header and the store key: encode through a stack
        // buffer, not a formatter call per byte.
        let mut buf = [0u8; 64];
        for chunk in self.0.chunks(buf.len() / 2) {
            let out = &mut buf[..chunk.len() * 2];
            hex::encode_to_slice(chunk, out).map_err(|_| fmt::Error)?;
            f.write_str(std::str::from_utf8(out).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

/// Why a text is not a serial.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a hexadecimal serial (e.g. 1a2b, 1A:2B or 0x1a2b)")]
pub struct SerialParseError(String);

/// Accepts hex in either case, with leading zeros, openssl's colon-separated `1A:2B` and a
/// `0x` prefix.
impl FromStr for Serial {
    type Err = SerialParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || SerialParseError(text.to_owned());
        let trimmed = text.trim();
        let digits = trimmed
            .strip_prefix("0x")
            .or_else(|| trimmed.strip_prefix("0X"))
            .unwrap_or(trimmed);
        let hex: Vec<u8> = digits.bytes().filter(|b| *b != b':').collect();
        if hex.is_empty() || !hex.iter().all(u8::is_ascii_hexdigit) {
            return Err(invalid());
        }
        // An odd digit count means a dropped leading zero nibble: `abc` is 0a bc.
        let padded: Vec<u8> = if hex.len() % 2 == 1 {
            std::iter::once(b'0').chain(hex).collect()
        } else {
            hex
        };
        let bytes = hex::decode(padded).map_err(|_| invalid())?;
        Ok(Serial::from_der_content(&bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Serial {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn der_content_loses_its_leading_zero_bytes_only() {
        assert_eq!(
            Serial::from_der_content(&[0x00, 0xde, 0xad]).to_string(),
            "dead"
        );
        assert_eq!(Serial::from_der_content(&[0x01, 0x00]).to_string(), "0100");
        assert_eq!(Serial::from_der_content(&[0x00]).to_string(), "00");
        assert_eq!(Serial::from_der_content(&[0x00, 0x00]).to_string(), "00");
        assert_eq!(Serial::from_der_content(&[0x0a, 0xbc]).to_string(), "0abc");
        let long: Vec<u8> = (1..=70).collect();
        assert_eq!(
            Serial::from_der_content(&long).to_string(),
            hex::encode(&long)
        );
    }

    #[test]
    fn every_spelling_of_a_serial_is_one_serial() {
        let want = Serial::from_der_content(&[0x1a, 0x2b]);
        for text in [
            "1a2b", "1A2B", "1A:2B", "1a:2b", "0x1a2b", "0X1A2B", "001a2b", "00:1a:2b", " 1a2b\n",
        ] {
            assert_eq!(parse(text), want, "{text}");
        }
        assert_eq!(parse("abc"), Serial::from_der_content(&[0x0a, 0xbc]));
        assert_eq!(parse("0"), Serial::from_der_content(&[0]));
        assert_eq!(parse("0000"), parse("00"));
    }

    #[test]
    fn text_that_is_not_hex_is_refused() {
        for text in ["", ":", "0x", "zz", "1a 2b", "1a-2b", "0x0x1a", "1a2g"] {
            assert!(text.parse::<Serial>().is_err(), "{text:?}");
        }
    }

    proptest! {
        #[test]
        fn display_parses_back(raw in proptest::collection::vec(any::<u8>(), 1..40)) {
            let serial = Serial::from_der_content(&raw);
            prop_assert_eq!(parse(&serial.to_string()), serial);
        }

        #[test]
        fn all_accepted_spellings_agree(
            raw in proptest::collection::vec(any::<u8>(), 1..40),
            zeros in 0usize..4,
            upper in any::<bool>(),
        ) {
            let serial = Serial::from_der_content(&raw);
            let plain = hex::encode(&raw);
            let cased = if upper { plain.to_uppercase() } else { plain.clone() };
            let colons = raw.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":");
            for text in [
                format!("{}{cased}", "0".repeat(zeros)),
                format!("0x{cased}"),
                colons,
                plain.trim_start_matches('0').to_owned() + if raw.iter().all(|b| *b == 0) { "0" } else { "" },
            ] {
                prop_assert_eq!(parse(&text), serial.clone(), "{}", text);
            }
        }
    }
}
