//! Triton's HTTP compression: gzip or deflate request bodies (`Content-Encoding`), and
//! inference responses compressed as `Accept-Encoding` asks.

use std::io::{Read, Write};

use flate2::read::{GzDecoder, ZlibDecoder};
use flate2::write::{GzEncoder, ZlibEncoder};
use flate2::Compression;
use nereid_core::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gzip,
    Deflate,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
        }
    }
}

/// A request's `Content-Encoding`: `Ok(None)` for none or identity, `Err(())` for unsupported.
pub fn request_encoding(header: Option<&str>) -> std::result::Result<Option<Encoding>, ()> {
    match header.unwrap_or("") {
        "" | "identity" => Ok(None),
        "gzip" => Ok(Some(Encoding::Gzip)),
        "deflate" => Ok(Some(Encoding::Deflate)),
        _ => Err(()),
    }
}

/// Decompresses a body, refusing to grow past `limit` bytes.
pub fn decompress(encoding: Encoding, data: &[u8], limit: usize) -> Result<Vec<u8>> {
    let reader: Box<dyn Read + '_> = match encoding {
        Encoding::Gzip => Box::new(GzDecoder::new(data)),
        Encoding::Deflate => Box::new(ZlibDecoder::new(data)),
    };
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| Error::internal(format!("failed to decompress the request body: {e}")))?;
    if out.len() > limit {
        return Err(Error::invalid_arg(format!(
            "decompressed request body exceeds the maximum allowed input size of {limit} bytes"
        )));
    }
    Ok(out)
}

/// Triton's choice from `Accept-Encoding`: the highest-weighted of gzip and deflate, if any.
pub fn response_encoding(accept: &str) -> Option<Encoding> {
    let mut best: Option<(Encoding, f64)> = None;
    for part in accept.split(',') {
        let mut fields = part.trim().split(";q=");
        let name = fields.next().unwrap_or("").trim();
        let weight = fields.next().map_or(Some(1.0), |w| w.trim().parse().ok());
        let (Some(weight), Some(encoding)) = (weight, request_encoding(Some(name)).ok().flatten()) else {
            continue;
        };
        if weight > 0.0 && best.is_none_or(|(_, w)| weight > w) {
            best = Some((encoding, weight));
        }
    }
    best.map(|(e, _)| e)
}

pub fn compress(encoding: Encoding, data: &[u8]) -> Vec<u8> {
    let out = Vec::with_capacity(data.len() / 2 + 64);
    let result = match encoding {
        Encoding::Gzip => {
            let mut e = GzEncoder::new(out, Compression::fast());
            e.write_all(data).and_then(|_| e.finish())
        }
        Encoding::Deflate => {
            let mut e = ZlibEncoder::new(out, Compression::fast());
            e.write_all(data).and_then(|_| e.finish())
        }
    };
    result.expect("compressing into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_limits() {
        let data = vec![7u8; 10_000];
        for e in [Encoding::Gzip, Encoding::Deflate] {
            let packed = compress(e, &data);
            assert!(packed.len() < data.len());
            assert_eq!(decompress(e, &packed, 10_000).unwrap(), data);
            assert!(decompress(e, &packed, 9_999).is_err());
        }
        assert!(decompress(Encoding::Gzip, b"not gzip", 100).is_err());
    }

    #[test]
    fn negotiation() {
        assert_eq!(request_encoding(None), Ok(None));
        assert_eq!(request_encoding(Some("identity")), Ok(None));
        assert_eq!(request_encoding(Some("br")), Err(()));
        assert_eq!(response_encoding("gzip"), Some(Encoding::Gzip));
        assert_eq!(response_encoding("gzip;q=0.5, deflate"), Some(Encoding::Deflate));
        assert_eq!(response_encoding("br, identity"), None);
        assert_eq!(response_encoding("deflate;q=0"), None);
    }
}
