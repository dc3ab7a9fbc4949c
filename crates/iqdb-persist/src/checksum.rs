//! CRC-32/IEEE, the checksum of every iqdb-persist file format.
//!
//! The polynomial is fixed by the 1.0 formats (it is what `crc32fast`
//! computes, with hardware acceleration picked at run time).

use crate::error::{PersistError, Result};

/// The CRC-32/IEEE of `bytes`.
///
/// ```
/// assert_eq!(iqdb_persist::checksum::compute(b"123456789"), 0xCBF4_3926);
/// ```
#[must_use]
pub fn compute(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// Checks `bytes` against `expected`, failing with
/// [`PersistError::ChecksumMismatch`].
///
/// ```
/// use iqdb_persist::checksum;
///
/// let crc = checksum::compute(b"payload");
/// assert!(checksum::verify(b"payload", crc).is_ok());
/// assert!(checksum::verify(b"paYload", crc).is_err());
/// ```
pub fn verify(bytes: &[u8], expected: u32) -> Result<()> {
    let computed = compute(bytes);
    if computed == expected {
        Ok(())
    } else {
        Err(PersistError::ChecksumMismatch { expected, computed })
    }
}

/// Checks a checksum computed elsewhere (for example by a streaming hasher).
pub(crate) fn check(expected: u32, computed: u32) -> Result<()> {
    if computed == expected {
        Ok(())
    } else {
        Err(PersistError::ChecksumMismatch { expected, computed })
    }
}
