//! Payload compression: scheme tags and the per-chunk codecs.
//!
//! Tags are shared by format v2 (one zstd frame or one raw LZ4 block for the
//! whole payload, as 1.0 writes) and v3 (one zstd frame or LZ4 block per
//! chunk). Codecs keep their contexts so a worker reuses them across chunks.

use crate::config::Compression;
use crate::error::{PersistError, Result};

/// Tag of an uncompressed payload.
pub(crate) const SCHEME_NONE: u8 = 0;
/// Tag of a zstd-compressed payload.
pub(crate) const SCHEME_ZSTD: u8 = 1;
/// Tag of an LZ4-compressed payload.
pub(crate) const SCHEME_LZ4: u8 = 2;

/// The on-disk tag of a scheme.
pub(crate) fn scheme_tag(scheme: Compression) -> u8 {
    match scheme {
        Compression::None => SCHEME_NONE,
        Compression::Zstd { .. } => SCHEME_ZSTD,
        Compression::Lz4 => SCHEME_LZ4,
    }
}

/// A human name for a tag (for inspection output).
pub(crate) fn scheme_name(tag: u8) -> &'static str {
    match tag {
        SCHEME_NONE => "none",
        SCHEME_ZSTD => "zstd",
        SCHEME_LZ4 => "lz4",
        _ => "unknown",
    }
}

/// Checks that a tag read from a file names a scheme this build can decode.
pub(crate) fn check_decodable(tag: u8) -> Result<()> {
    match tag {
        SCHEME_NONE => Ok(()),
        SCHEME_ZSTD if cfg!(feature = "zstd") => Ok(()),
        SCHEME_LZ4 if cfg!(feature = "lz4") => Ok(()),
        SCHEME_ZSTD => Err(PersistError::Unsupported {
            feature: "reading a zstd-compressed snapshot",
            available_in: "the `zstd` cargo feature of iqdb-persist",
        }),
        SCHEME_LZ4 => Err(PersistError::Unsupported {
            feature: "reading an LZ4-compressed snapshot",
            available_in: "the `lz4` cargo feature of iqdb-persist",
        }),
        _ => Err(PersistError::Compression {
            reason: "unknown compression scheme tag",
        }),
    }
}

/// The most bytes `raw_len` bytes can take once stored under `tag` (how
/// large a stored chunk may honestly be).
pub(crate) fn max_stored_len(tag: u8, raw_len: usize) -> usize {
    match tag {
        SCHEME_NONE => raw_len,
        // zstd's ZSTD_COMPRESSBOUND plus frame overhead slack.
        SCHEME_ZSTD => raw_len + (raw_len >> 8) + 1024,
        // LZ4's worst case: one extra byte per 255 plus literal overhead.
        _ => raw_len + raw_len / 255 + 64,
    }
}

/// The most raw bytes `stored_len` bytes can decode to under LZ4 (whose
/// densest encoding spends at least one byte per 255 bytes of output). Used
/// to refuse a v2 LZ4 length field the file cannot back.
pub(crate) fn lz4_max_raw_len(stored_len: u64) -> u64 {
    stored_len.saturating_mul(255).saturating_add(64)
}

/// Compresses and decompresses single chunks, keeping codec contexts.
pub(crate) struct ChunkCodec {
    scheme: Compression,
    #[cfg(feature = "zstd")]
    zstd_compressor: Option<zstd::bulk::Compressor<'static>>,
    #[cfg(feature = "zstd")]
    zstd_decompressor: Option<zstd::bulk::Decompressor<'static>>,
}

impl ChunkCodec {
    pub(crate) fn new(scheme: Compression) -> Self {
        Self {
            scheme,
            #[cfg(feature = "zstd")]
            zstd_compressor: None,
            #[cfg(feature = "zstd")]
            zstd_decompressor: None,
        }
    }

    /// Compresses `raw` into `out` (replacing its contents).
    pub(crate) fn compress(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
        out.clear();
        match self.scheme {
            Compression::None => {
                out.extend_from_slice(raw);
                Ok(())
            }
            Compression::Zstd { level } => self.compress_zstd(level, raw, out),
            Compression::Lz4 => compress_lz4(raw, out),
        }
    }

    /// Decompresses a chunk stored under `tag` into `out`, which must end up
    /// exactly `raw_len` bytes long.
    pub(crate) fn decompress(
        &mut self,
        tag: u8,
        stored: &[u8],
        raw_len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        out.clear();
        match tag {
            SCHEME_NONE => {
                if stored.len() != raw_len {
                    return Err(PersistError::InvalidPayload {
                        reason: "uncompressed chunk length disagrees with its header",
                    });
                }
                out.extend_from_slice(stored);
                Ok(())
            }
            SCHEME_ZSTD => self.decompress_zstd(stored, raw_len, out),
            SCHEME_LZ4 => decompress_lz4(stored, raw_len, out),
            _ => check_decodable(tag),
        }
    }

    #[cfg(feature = "zstd")]
    fn compress_zstd(&mut self, level: i32, raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let compressor = match &mut self.zstd_compressor {
            Some(c) => c,
            slot => slot.insert(zstd::bulk::Compressor::new(level).map_err(|_| {
                PersistError::Compression {
                    reason: "zstd compressor could not be created",
                }
            })?),
        };
        out.reserve(zstd::zstd_safe::compress_bound(raw.len()));
        compressor
            .compress_to_buffer(raw, out)
            .map_err(|_| PersistError::Compression {
                reason: "zstd compression failed",
            })?;
        Ok(())
    }

    #[cfg(not(feature = "zstd"))]
    fn compress_zstd(&mut self, _level: i32, _raw: &[u8], _out: &mut Vec<u8>) -> Result<()> {
        check_decodable(SCHEME_ZSTD)
    }

    #[cfg(feature = "zstd")]
    fn decompress_zstd(&mut self, stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
        let decompressor = match &mut self.zstd_decompressor {
            Some(d) => d,
            slot => slot.insert(zstd::bulk::Decompressor::new().map_err(|_| {
                PersistError::Compression {
                    reason: "zstd decompressor could not be created",
                }
            })?),
        };
        out.reserve(raw_len);
        let n = decompressor
            .decompress_to_buffer(stored, out)
            .map_err(|_| PersistError::Compression {
                reason: "zstd chunk does not decompress",
            })?;
        if n != raw_len {
            return Err(PersistError::Compression {
                reason: "zstd chunk decompressed to the wrong length",
            });
        }
        Ok(())
    }

    #[cfg(not(feature = "zstd"))]
    fn decompress_zstd(
        &mut self,
        _stored: &[u8],
        _raw_len: usize,
        _out: &mut Vec<u8>,
    ) -> Result<()> {
        check_decodable(SCHEME_ZSTD)
    }
}

#[cfg(feature = "lz4")]
fn compress_lz4(raw: &[u8], out: &mut Vec<u8>) -> Result<()> {
    out.resize(lz4_flex::block::get_maximum_output_size(raw.len()), 0);
    let n = lz4_flex::block::compress_into(raw, out).map_err(|_| PersistError::Compression {
        reason: "LZ4 compression failed",
    })?;
    out.truncate(n);
    Ok(())
}

#[cfg(not(feature = "lz4"))]
fn compress_lz4(_raw: &[u8], _out: &mut Vec<u8>) -> Result<()> {
    check_decodable(SCHEME_LZ4)
}

/// Decompresses one raw LZ4 block of known output length.
#[cfg(feature = "lz4")]
pub(crate) fn decompress_lz4(stored: &[u8], raw_len: usize, out: &mut Vec<u8>) -> Result<()> {
    if raw_len as u64 > lz4_max_raw_len(stored.len() as u64) {
        return Err(PersistError::Compression {
            reason: "LZ4 length field claims more than the block can hold",
        });
    }
    out.clear();
    out.resize(raw_len, 0);
    let n =
        lz4_flex::block::decompress_into(stored, out).map_err(|_| PersistError::Compression {
            reason: "LZ4 block does not decompress",
        })?;
    if n != raw_len {
        return Err(PersistError::Compression {
            reason: "LZ4 block decompressed to the wrong length",
        });
    }
    Ok(())
}

#[cfg(not(feature = "lz4"))]
pub(crate) fn decompress_lz4(_stored: &[u8], _raw_len: usize, _out: &mut Vec<u8>) -> Result<()> {
    check_decodable(SCHEME_LZ4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| ((i % 251) as f32).to_le_bytes())
            .collect()
    }

    fn round_trip(scheme: Compression) -> Result<()> {
        let raw = sample();
        let mut codec = ChunkCodec::new(scheme);
        let mut stored = Vec::new();
        codec.compress(&raw, &mut stored)?;
        assert!(stored.len() <= max_stored_len(scheme_tag(scheme), raw.len()));
        let mut back = Vec::new();
        codec.decompress(scheme_tag(scheme), &stored, raw.len(), &mut back)?;
        assert_eq!(back, raw);
        // A wrong length is an error, not a silent short read.
        let wrong = codec.decompress(scheme_tag(scheme), &stored, raw.len() - 1, &mut back);
        assert!(wrong.is_err());
        Ok(())
    }

    #[test]
    fn none_round_trips() -> Result<()> {
        round_trip(Compression::None)
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_round_trips_and_compresses() -> Result<()> {
        round_trip(Compression::Zstd { level: 3 })?;
        let mut stored = Vec::new();
        ChunkCodec::new(Compression::Zstd { level: 1 }).compress(&sample(), &mut stored)?;
        assert!(stored.len() < sample().len() / 2);
        Ok(())
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_round_trips() -> Result<()> {
        round_trip(Compression::Lz4)
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_refuses_impossible_length() {
        let mut out = Vec::new();
        let err = decompress_lz4(&[0u8; 10], 1 << 40, &mut out);
        assert!(matches!(err, Err(PersistError::Compression { .. })));
        assert!(out.capacity() < 1 << 20);
    }

    #[test]
    fn unknown_tag_is_refused() {
        assert!(check_decodable(9).is_err());
        let mut out = Vec::new();
        assert!(
            ChunkCodec::new(Compression::None)
                .decompress(9, b"x", 1, &mut out)
                .is_err()
        );
    }
}
